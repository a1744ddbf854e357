"""Candidate operations of the DARTS and PNAS search spaces.

DARTS (Liu et al., ICLR 2019), Sec. 3.1 and its official ``operations.py``; PNAS (Liu et
al., ECCV 2018), Sec. 3.1. Every op is built by ``OPS[name](C, stride, affine)`` and maps
``C`` channels to ``C`` channels, halving height and width when ``stride == 2``.

Op definitions follow the official DARTS code:

- ``sep_conv_k``: (ReLU, depthwise kxk, 1x1, BN) twice; only the first depthwise conv has
  the stride. A "separable conv applied twice", as in NASNet/PNAS.
- ``dil_conv_k``: ReLU, depthwise kxk with dilation 2, 1x1, BN.
- ``skip_connect`` / ``identity``: identity; at stride 2 a :class:`FactorizedReduce`.
  PNAS calls it identity, DARTS skip_connect: one op under two names.
- ``none``: zeros (subsampled at stride 2); DARTS only, it lets the search "cut" an edge.
- ``conv_7x1_1x7``: ReLU, 1x7 conv, 7x1 conv, BN (PNAS's "1x7 followed by 7x1").
- pools: 3x3 with padding 1; the search network adds a non-affine BN after them
  (see ``pc_darts.py``), evaluation networks do not.

What is left out: nothing of the two op sets; PNAS's 3x3 dilated conv is DARTS's
``dil_conv_3x3``.
"""
from __future__ import annotations

import torch
from torch import nn



class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN; the 1x1 preprocessing of cell inputs."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise kxk (dilated) -> pointwise 1x1 -> BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked separable convs; only the first is strided (DARTS ``operations.py``)."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )


class Conv7x1_1x7(nn.Sequential):
    """ReLU -> 1x7 -> 7x1 -> BN: a 7x7 receptive field at 2*7*C^2 weights instead of 49*C^2."""

    def __init__(self, C, stride, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """The ``none`` op: an edge that contributes nothing."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve H and W with two 1x1 stride-2 convs, the second shifted by one pixel, so that
    together they see every input position (a stride-2 1x1 alone would skip 3 of 4)."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even number of output channels"
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)
        self.grouped = False  # one grouped conv instead of two (fast.convs.fast_backward sets it)

    def forward(self, x):
        x = self.relu(x)
        # Odd sizes: pad so both branches give ceil(H/2) (the official code assumes even).
        if x.size(2) % 2 or x.size(3) % 2:
            x = nn.functional.pad(x, (0, x.size(3) % 2, 0, x.size(2) % 2))
        if not self.grouped:  # the official form
            out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
            return self.bn(out)
        # The same sums as one 1x1 conv with 2 groups over the two stride-2 grids. Besides one
        # call instead of two, the conv's backward then gets a whole gradient, not a channel
        # slice of the cat: in NHWC with 1-2 channels per half, torch 2.14.1's CPU conv
        # backward corrupts the heap on such a slice.
        grids = torch.cat([x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]], dim=1)  # (B, 2C_in, H/2, W/2)
        weight = torch.cat([self.conv_1.weight, self.conv_2.weight])  # (C_out, C_in, 1, 1)
        return self.bn(nn.functional.conv2d(grids, weight, groups=2))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle (PC-DARTS Sec. 3.2): view (B, g, C/g, H, W), swap the two
    channel axes, flatten; the g groups interleave, so the next edge's first C/K channels
    mix processed and bypassed ones."""
    if groups == 1:
        return x
    B, C, H, W = x.shape
    return x.view(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


def _skip(C, stride, affine):
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


# name -> constructor(C, stride, affine). A plain dict: the registry *is* the search space.
OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1,
                                                           count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": _skip,
    "identity": _skip,
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "conv_7x1_1x7": lambda C, stride, affine: Conv7x1_1x7(C, stride, affine=affine),
}

# DARTS Sec. 3.1 / official ``genotypes.PRIMITIVES``, in this order (the order fixes the
# meaning of each column of alpha).
DARTS_OPS = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)

# PNAS Sec. 3.1: the 8 operations of the PNAS cell space.
PNAS_OPS = (
    "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7",
    "identity", "avg_pool_3x3", "max_pool_3x3", "dil_conv_3x3",
)

# What each op computes, in one line, for tables and widgets.
OP_DESCRIPTIONS = {
    "none": "zero: the edge is cut",
    "avg_pool_3x3": "3x3 average pooling (no weights)",
    "max_pool_3x3": "3x3 max pooling (no weights)",
    "skip_connect": "identity (factorized reduce at stride 2)",
    "identity": "identity (factorized reduce at stride 2)",
    "sep_conv_3x3": "two depthwise-separable 3x3 convs",
    "sep_conv_5x5": "two depthwise-separable 5x5 convs",
    "sep_conv_7x7": "two depthwise-separable 7x7 convs",
    "dil_conv_3x3": "depthwise 3x3 dilated by 2 (5x5 field) + 1x1",
    "dil_conv_5x5": "depthwise 5x5 dilated by 2 (9x9 field) + 1x1",
    "conv_7x1_1x7": "1x7 conv then 7x1 conv",
}


def is_identity(op: nn.Module) -> bool:
    """True for ops that drop-path must leave alone (DARTS ``model.py``)."""
    return isinstance(op, Identity)
