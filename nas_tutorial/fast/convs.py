"""Depthwise convolution whose CPU backward takes exact shortcuts.

The separable and dilated convs of the DARTS space (DARTS Sec. 3.1, official
``operations.py``) are a depthwise kxk conv then a pointwise 1x1 conv, with few channels:
4-16 in a PC-DARTS supernet at K=4. Their forward is cheap on a CPU, but torch's backward is
not: on 2 threads, batch 32, 4 channels at 32x32, in NCHW, the weight gradient of a 5x5
depthwise kernel took 2.2 ms against 0.7 ms for the forward, the input gradient of a
dilated 5x5 2.5 ms against 0.3 ms. The rewrites, each the same sums:

- **depthwise, input gradient at stride 1**: the gradient of a correlation is a correlation
  of the output gradient with the kernel turned by 180 degrees, same padding and dilation:
  a forward conv, the fast direction (3-10x faster for dilated kernels);
- **depthwise, weight gradient without dilation**: computed in NHWC, the layout where
  oneDNN has a direct depthwise kernel (2-3x faster at 4-16 channels, for a copy of the
  input and the gradient);
- **depthwise, weight gradient of a dilation-2 kernel** on even sizes of at least 16: a
  dilation-2 correlation only ever pairs pixels of one parity, so it is an undilated
  correlation of each of the four parity grids (rows even/odd x columns even/odd), stacked
  as a batch of 4B images of half the size, padding halved (3x faster at 32x32).

The pointwise 1x1 conv that follows was tried the same way (both gradients as batched
matrix products: 3-16x faster alone in NCHW at 4-32 channels) and left out: the search step
was no faster with it (K=4, 2 threads, in-process A/B: 3.39 s with, 3.30 s without).

Anything else (stride 2 input gradients, small dilated maps, even kernels, non-square
settings, CUDA, no gradient) runs torch's own kernels; ``benchmarks/bench_pc_darts.py``
measures the search step they buy. Parameters and state dicts are those of ``nn.Conv2d``.

The sums are the same but not in the same order, so the last bits differ from torch's
kernels: the search supernet takes these paths (:func:`fast_backward`, called by the fast
cell of :mod:`nas_tutorial.fast.pc_darts`); the plain supernet of :mod:`nas_tutorial.pc_darts`
and the evaluation networks, whose trainings the ground-truth tables recorded, keep torch's
kernels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import FactorizedReduce

_conv_backward = torch.ops.aten.convolution_backward


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C, C, k, stride, padding, dilation, groups=C, bias=False)``; on a CPU its
    backward uses the rewrites of this module. Same parameters, same outputs."""

    def __init__(self, channels, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__(channels, channels, kernel_size, stride, padding, dilation,
                         groups=channels, bias=False)

    def forward(self, x):
        square = all(isinstance(v, tuple) and len(set(v)) == 1 for v in
                     (self.kernel_size, self.stride, self.padding, self.dilation))
        if not square:
            return super().forward(x)
        return depthwise(x, self.weight, self.stride[0], self.padding[0], self.dilation[0])


def depthwise(x, weight, stride: int, padding: int, dilation: int, grad_mask=None):
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups=x.shape[1])`` (weight
    (C, 1, k, k)) with the CPU backward of this module; torch's own off the CPU or without
    gradients. ``grad_mask`` (shaped like ``weight``, 0 or 1): the weight's gradient is
    zero where it is 0 (``fast.fused`` keeps 3x3 kernels inside 5x5 ones whose ring must
    stay zero); the forward reads the weight as it is."""
    if x.device.type != "cpu" or not torch.is_grad_enabled():
        if grad_mask is not None and weight.requires_grad:
            weight = weight * grad_mask  # the same forward; the ring gets no gradient
        return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])
    dtype = _cpu_autocast_dtype()
    if dtype is not None:  # cast float32 as autocast would: one dtype in the backward
        x, weight = (t.to(dtype) if t.dtype == torch.float32 else t for t in (x, weight))
    return _Depthwise.apply(x, weight, stride, padding, dilation, grad_mask)


def fast_backward(module: nn.Module) -> nn.Module:
    """Give every depthwise conv in ``module`` the backward of :class:`DepthwiseConv2d`
    (same parameters, nothing re-initialized) and every factorized reduce its one-conv form;
    returns ``module``."""
    for m in module.modules():
        if (type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels
                == m.out_channels and m.bias is None):
            m.__class__ = DepthwiseConv2d  # adds behaviour only, no state
        elif isinstance(m, FactorizedReduce):
            m.grouped = True
    return module


class _Depthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride: int, padding: int, dilation: int, grad_mask=None):
        ctx.save_for_backward(x, weight)
        ctx.conf, ctx.grad_mask = (stride, padding, dilation), grad_mask
        return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        same = 2 * padding == dilation * (weight.shape[-1] - 1)  # output size = input size
        gx = gw = None
        if ctx.needs_input_grad[0]:
            if stride == 1 and same:
                gx = F.conv2d(grad, weight.flip(2, 3), None, 1, padding, dilation, x.shape[1])
            else:
                gx = _native(grad, x, weight, ctx.conf, (True, False))
        if ctx.needs_input_grad[1]:
            H, W = x.shape[-2:]
            if dilation == 1:
                gw = _native(_nhwc(grad), _nhwc(x), weight, ctx.conf, (False, True))
            elif (dilation == 2 and stride == 1 and same and padding % 2 == 0
                  and H % 2 == 0 and W % 2 == 0 and min(H, W) >= 16):
                gw = _native(_parity_grids(grad), _parity_grids(x), weight,
                             (1, padding // 2, 1), (False, True))
            else:
                gw = _native(grad, x, weight, ctx.conf, (False, True))
            if ctx.grad_mask is not None:
                gw = gw * ctx.grad_mask
        return gx, gw, None, None, None, None


def _cpu_autocast_dtype():
    """The CPU autocast dtype while CPU autocast is on, else None (torch >= 2.4)."""
    try:
        on = torch.is_autocast_enabled("cpu")
        return torch.get_autocast_dtype("cpu") if on else None
    except TypeError:  # older signature
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def _native(grad, x, weight, conf, mask):
    stride, padding, dilation = conf
    gx, gw, _ = _conv_backward(grad, x, weight, None, [stride] * 2, [padding] * 2,
                               [dilation] * 2, False, [0, 0], x.shape[1],
                               [mask[0], mask[1], False])
    return gx if mask[0] else gw


def _nhwc(t):
    return t.contiguous(memory_format=torch.channels_last)


def _parity_grids(t):
    """(B, C, H, W) -> (4B, C, H/2, W/2) in NHWC: the grids of pixels (2i+a, 2j+b) for the
    four parities (a, b), stacked along the batch."""
    B, C, H, W = t.shape
    return (t.reshape(B, C, H // 2, 2, W // 2, 2).permute(3, 5, 0, 2, 4, 1)
            .reshape(4 * B, H // 2, W // 2, C).permute(0, 3, 1, 2))
