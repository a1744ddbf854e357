"""The PC-DARTS search cell with its mixed operations fused across edges.

A step of the search supernet is bound by the number of operators it dispatches, not by
their arithmetic (issue 26: about 160,000 aten operators per K=4 step at batch 8 on a CPU;
on an H200 1.05 s of host time against 0.32 s of GPU time). In the plain cell (DARTS
Sec. 2.2 Eq. 2, PC-DARTS Sec. 3.2-3.3, the official ``model_search.py``) every edge runs
its eight candidate ops on its own: 14 edges x 12 convolutions and 8 batch norms a cell.
But every edge leaving one state applies the same eight ops to the same input (the state's
first C/K channels), each with its own weights. :class:`FusedSearchCell` therefore runs
each op once per *state*, for all the edges leaving it (horizontal fusion):

- the state's partial channels are repeated once per outgoing edge and kind, and a 3x3
  depthwise kernel is stored inside a 5x5 one with a zero ring, so the first depthwise
  convs of all edges are two convs (undilated: sep 3x3 and 5x5; dilated: dil 3x3 and 5x5)
  and the second convs of the separable ops one;
- the 1x1 convs of all edges and kinds that run at one time are one grouped 1x1 conv
  (:func:`pointwise`);
- batch norm is per channel, so the batch norms that run at one time are one batch norm
  over the concatenated channels: one for the middle of the separable convs, one for the
  last BN of every op (the pools' included: every edge pools the same tensor once);
- the weighted sum over ops, ``sum_o w_o * BN(z_o)``, folds the weights into that last
  batch norm's scale (``BN(z) * w`` is a BN with weight ``w``), then sums over kinds;
- the stride-2 skip (factorized reduce) of all edges is one matrix product.

With the rewrites of :mod:`.pc_darts` (``none`` skipped, one ReLU per state, beta folded
into the op weights) this is exact in exact arithmetic: the same sums, reassociated, so the
last float bits differ. ``tests/test_pc_darts.py`` holds it equal to the plain supernet in
float64 (1e-9 relative): logits, the gradients of alpha, beta and every weight, and the BN
statistics, at K = 1, 2, 4, 8 with and without edge normalization, in training and eval.

The fused weights are stacked per state (``sep_dw1`` holds the first depthwise kernel of
both separable ops of every edge leaving the state), but the state dict is the plain cell's,
key for key and in order: ``state_dict()`` splits the stacks (and crops the 3x3 kernels),
loading stacks them again. A checkpoint moves between plain, fast and fused supernets, and
one seed builds the same weights in all three (the cell builds the plain edges first, then
stacks them). The zero ring of a 3x3 kernel gets no gradient (``convs.depthwise``'s
``grad_mask``), so SGD with weight decay and momentum leaves it zero.

The fused cell runs DARTS's op set; for any other ``SearchNetwork`` builds the unfused fast
cell, and NHWC partial channels for the ops alone (``pc_darts.ops_to``) are that cell's
too. Where each is faster (per K on a CPU, always on CUDA): ``fast.pc_darts.CPU_FUSED``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import DARTS_OPS, OPS, FactorizedReduce, ReLUConvBN, channel_shuffle
from .convs import depthwise, fast_backward

MOMENTUM, EPS = 0.1, 1e-5  # nn.BatchNorm2d's defaults, which the plain cell's BNs use
OP = {name: i for i, name in enumerate(DARTS_OPS)}  # column of each op in alpha


class FusedEdges(nn.Module):
    """The mixed ops (DARTS Eq. 2) of all ``E`` edges leaving one state, on its first ``c``
    channels, at one stride; :meth:`forward` gives every edge's weighted sum.

    Stacked weights, rows kind-major then edge-major (``pw1``: the sep_conv_3x3 rows of
    edge 0, of edge 1, ..., then sep_conv_5x5's, dil_conv_3x3's, dil_conv_5x5's). A 3x3
    depthwise kernel sits in the middle of a 5x5 one whose ring stays zero (``mask``: its
    gradient there is zero), so a 3x3 and a 5x5 conv, or a dilated 3x3 and 5x5, are one
    conv. :class:`FusedSearchCell` maps all of it to the plain names.

    ``edges``: the plain cell's index of each edge (:attr:`weight_index` finds their op
    weights in the cell's flattened ``(n_edges, 8)`` weights)."""

    def __init__(self, c: int, stride: int, edges: list):
        super().__init__()
        self.c, self.stride, self.E = c, stride, len(edges)
        E = self.E
        rows = E * c
        self.reduce = stride == 2  # the skip is a factorized reduce (ops.FactorizedReduce)
        for name, shape in (("sep_dw1", (2 * rows, 1, 5, 5)), ("dil_dw", (2 * rows, 1, 5, 5)),
                            ("pw1", (4 * rows, c, 1, 1)), ("sep_dw2", (2 * rows, 1, 5, 5)),
                            ("pw2", (2 * rows, c, 1, 1))):
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))  # filled by the cell
        if self.reduce:
            self.reduce_pw = nn.Parameter(torch.empty(rows, c, 1, 1))  # conv_1 rows, conv_2 rows
        mask = torch.ones(2 * rows, 1, 5, 5)
        mask[:rows] = F.pad(torch.ones(3, 3), (1, 1, 1, 1))  # the 3x3 kernels' zero ring
        self.register_buffer("mask", mask, persistent=False)
        # The last BN of every op, stacked: sep 3x3, sep 5x5, dil 3x3, dil 5x5, [the
        # factorized reduce,] max pool, avg pool; each row scaled by its edge's op weight.
        self.final = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"] + (
            ["skip_connect"] if self.reduce else [])
        self.final += ["max_pool_3x3", "avg_pool_3x3"]
        for name, n in (("mid", 2 * rows), ("final", len(self.final) * rows)):
            self.register_buffer(f"{name}_mean", torch.zeros(n))
            self.register_buffer(f"{name}_var", torch.ones(n))
        # where each row's weight sits in the cell's flattened (n_edges, 8) op weights:
        # the final BN's scale, then (stride 1) each edge's identity weight
        n_ops = len(DARTS_OPS)
        self.weight_index = [e * n_ops + OP[kind] for kind in self.final for e in edges
                             for _ in range(c)]
        if not self.reduce:
            self.weight_index += [e * n_ops + OP["skip_connect"] for e in edges]
        self.weight_sizes = [len(self.final) * rows, 0 if self.reduce else E]
        self.edges = edges

    def _bn(self, x, name, weight=None):
        return F.batch_norm(x, getattr(self, name + "_mean"), getattr(self, name + "_var"),
                            weight, None, self.training, MOMENTUM, EPS)

    def forward(self, x, x_relu, scale, skip):
        """x, x_relu: the state's first c channels and their ReLU, (B, c, H, W); scale,
        skip: this group's op weights as :attr:`weight_index` picks them from
        softmax(alpha) (times beta with edge normalization): each final BN row's, each
        edge's identity's (empty at stride 2). Returns (B, E, c, H', W'): edge e's
        sum_o w[e, o] * op_o(x)."""
        B, E, c, s = x.shape[0], self.E, self.c, self.stride
        xe = tile(x_relu, 2 * E)  # (B, 2E*c, H, W): rows e*c:(e+1)*c feed edge e
        # first depthwise convs: sep 3x3 and 5x5 in one (undilated), dil 3x3 and 5x5 in one
        sep = depthwise(xe, self.sep_dw1, s, 2, 1, self.mask)
        dil = depthwise(xe, self.dil_dw, s, 4, 2, self.mask)
        mid, dil = pointwise([sep, dil], self.pw1, (2 * E, 2 * E))  # (B, 2E*c, H', W') each
        mid = F.relu(self._bn(mid, "mid"))  # the separable convs' middle
        sep = pointwise([depthwise(mid, self.sep_dw2, 1, 2, 1, self.mask)], self.pw2)
        pools = torch.stack([F.max_pool2d(x, 3, s, 1),  # once for every edge
                             F.avg_pool2d(x, 3, s, 1, count_include_pad=False)], 1)
        H, W = pools.shape[-2:]  # (B, 2, c, H', W') -> (B, 2*E*c, H', W'), kind-major
        pools = pools.unsqueeze(2).expand(B, 2, E, c, H, W).reshape(B, 2 * E * c, H, W)
        z = [sep, dil] + ([self._factorized_reduce(x_relu)] if self.reduce else []) + [pools]
        # the weighted sum folded into the last BN: row (kind, e, ch) is scaled by w[e, kind]
        z = self._bn(torch.cat(z, 1), "final", scale)
        out = z.unflatten(1, (len(self.final), E, c)).sum(1)  # (B, E, c, H', W')
        if not self.reduce:  # the identity, weighted per edge
            out = out + skip.view(1, E, 1, 1, 1) * x.unsqueeze(1)
        return out

    def _factorized_reduce(self, x_relu):
        """Every edge's factorized reduce before its BN (``ops.FactorizedReduce``): conv_1
        of each edge on the even grid, conv_2 on the odd one, as one matrix product."""
        x, E, c = x_relu, self.E, self.c
        if x.size(2) % 2 or x.size(3) % 2:  # odd sizes: as FactorizedReduce pads
            x = F.pad(x, (0, x.size(3) % 2, 0, x.size(2) % 2))
        grids = torch.stack([x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]], 1)  # (B, 2, c, H/2, W/2)
        B, _, _, H, W = grids.shape
        # rows per edge (conv_1's c/2, conv_2's c/2) -> per grid, every edge's rows
        weight = self.reduce_pw.view(E, 2, c // 2, c).transpose(0, 1).reshape(2, E * c // 2, c)
        out = torch.matmul(weight, grids.view(B, 2, c, H * W))  # (B, 2, E*c/2, H*W)
        return out.view(B, 2, E, c // 2, H, W).transpose(1, 2).reshape(B, E * c, H, W)


def pointwise(xs, weight, outs=None):
    """The 1x1 convs of many edges at once: with ``x = torch.cat(xs, 1)`` (each (B, g_i*c,
    H, W), ``G = sum(g_i)`` groups of ``c`` channels) and ``weight`` (G*c_out, c, 1, 1), the
    grouped conv ``F.conv2d(x, weight, groups=G)``, its output split into groups of the
    sizes ``outs`` (a tuple of tensors), or whole when ``outs`` is None.

    On CUDA that call. On a CPU one batched matrix product over the groups
    (:class:`_GroupedPointwise`): there torch runs a grouped 1x1 conv as one conv per group
    when the batch is small (under 16 on one thread), and at batch 32 its mkldnn kernel was
    slower than the product (2 threads, 16 groups of 4 channels at 32x32, forward and
    backward: 13.5 ms against 6.8 ms)."""
    G = sum(x.shape[1] for x in xs) // weight.shape[1]
    c_out = weight.shape[0] // G
    splits = tuple(outs) if outs is not None else (G,)
    if xs[0].device.type != "cpu":
        out = F.conv2d(torch.cat(xs, 1) if len(xs) > 1 else xs[0], weight, groups=G)
        out = out.split([g * c_out for g in splits], 1)
    else:
        out = _GroupedPointwise.apply(weight.view(G, c_out, -1), splits, *xs)
    return tuple(out) if outs is not None else out[0]


class _GroupedPointwise(torch.autograd.Function):
    """out[:, g] = weight[g] @ x[:, g] for every group g, as one ``bmm`` over the groups.
    The inputs are gathered straight into the product's layout (G, c, B*H*W), one copy, and
    every operand is contiguous (a transposed one makes the CPU ``bmm`` loop, one call per
    group); the outputs come back split, each contiguous."""

    @staticmethod
    def forward(ctx, weight, splits, *xs):  # weight: (G, c_out, c); xs: (B, g_i*c, H, W)
        B, _, H, W = xs[0].shape
        G, c_out, c = weight.shape
        xg = torch.cat([x.reshape(B, -1, c, H * W).permute(1, 2, 0, 3) for x in xs])
        xg = xg.view(G, c, B * H * W)
        ctx.save_for_backward(xg, weight)
        ctx.shape, ctx.sizes, ctx.splits = (B, H, W), [x.shape[1] // c for x in xs], splits
        out = torch.bmm(weight, xg).view(G, c_out, B, H * W)
        return tuple(o.permute(2, 0, 1, 3).reshape(B, -1, H, W) for o in out.split(splits))

    @staticmethod
    def backward(ctx, *grads):
        xg, weight = ctx.saved_tensors
        (B, H, W), (G, c_out, c) = ctx.shape, weight.shape
        gg = torch.cat([g.reshape(B, -1, c_out, H * W).permute(1, 2, 0, 3) for g in grads])
        gg = gg.view(G, c_out, B * H * W)
        gw = torch.bmm(gg, xg.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        gx = [None] * len(ctx.sizes)
        if any(ctx.needs_input_grad[2:]):
            g = torch.bmm(weight.transpose(1, 2), gg).view(G, c, B, H * W)
            gx = [t.permute(2, 0, 1, 3).reshape(B, -1, H, W) for t in g.split(ctx.sizes)]
        return (gw, None, *gx)


def tile(x, n: int):
    """(B, c, H, W) -> (B, n*c, H, W), n copies along the channels (``x.repeat(1, n, 1,
    1)`` in a third of the operators, forward and backward)."""
    B, c, H, W = x.shape
    return x.unsqueeze(1).expand(B, n, c, H, W).reshape(B, n * c, H, W)


class FusedSearchCell(nn.Module):
    """``pc_darts.SearchCell`` with the mixed ops of all edges leaving a state fused
    (module docstring); same constructor, forward and state dict. DARTS's op set only
    (``SearchNetwork`` builds the unfused fast cell for any other)."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 k, primitives=DARTS_OPS):
        super().__init__()
        if tuple(primitives) != DARTS_OPS:
            raise ValueError("the fused cell runs DARTS's eight ops, in DARTS's order")
        self.reduction, self.k, self.C = reduction, k, C
        self._steps, self._multiplier = steps, multiplier
        c = C // k
        # built in the plain cell's order: one seed gives all three cells the same weights
        if reduction_prev:
            self.preprocess0 = fast_backward(FactorizedReduce(C_prev_prev, C, affine=False))
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        state = {}  # the plain cell's edges, built (and initialised) in its order
        for e in range(sum(2 + i for i in range(steps))):
            stride = 2 if reduction and self._source(e) < 2 else 1
            ops = nn.ModuleList()
            for name in DARTS_OPS:
                op = OPS[name](c, stride, False)
                ops.append(nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
                           if "pool" in name else op)
            state.update({f"_ops.{e}._ops.{key}": v for key, v in ops.state_dict().items()})
        self._plain_order = list(state)
        # state j's edges go to nodes max(0, j-1) .. steps-1; the plain index of the edge
        # (state j -> node i) is offset(i) + j
        offset = [sum(2 + n for n in range(i)) for i in range(steps)]
        self.targets = [[i for i in range(steps) if j < 2 + i] for j in range(steps + 1)]
        self.groups = nn.ModuleList(
            FusedEdges(c, 2 if reduction and j < 2 else 1, [offset[i] + j for i in nodes])
            for j, nodes in enumerate(self.targets))
        # one gather per forward picks every group's op weights (FusedEdges.weight_index)
        self.register_buffer("weight_index", torch.tensor(
            [i for g in self.groups for i in g.weight_index]), persistent=False)
        self.register_buffer("edge_index", torch.tensor(
            [e for g in self.groups for e in g.edges]), persistent=False)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.mp = nn.MaxPool2d(2, 2, ceil_mode=True)
        self._plain_keys = self._key_map(offset)
        self._register_state_dict_hook(_state_dict_hook)
        self.load_state_dict(self.state_dict() | state)

    def _source(self, e: int) -> int:
        """The state that plain edge ``e`` leaves."""
        i = 0
        while e >= 2 + i:
            e, i = e - (2 + i), i + 1
        return e

    # -- forward -----------------------------------------------------------------------
    def forward(self, s0, s1, alpha_w, beta_w=None):
        # alpha_w: (n_edges, n_ops) softmax(alpha); beta_w: (n_edges,) per-node softmax(beta)
        if self.training:
            with torch.no_grad():  # every fused BN counts this batch (the plain BNs' counter)
                self.num_batches_tracked.add_(1)
        w = (alpha_w if beta_w is None else alpha_w * beta_w[:, None]).flatten()  # beta folded
        # per group: the final BN's scale, then (stride 1) the identity's weights
        w = w[self.weight_index].split([n for g in self.groups for n in g.weight_sizes])
        if beta_w is not None and self.k > 1:  # each edge's beta, for its bypass
            bw = beta_w[self.edge_index].split([g.E for g in self.groups])
        c = self.C // self.k
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # (B, C, H, W) each
        acc = None  # (B, n, C', H', W'): the sums so far of the n nodes not yet complete
        for j, group in enumerate(self.groups):
            s = states[j]
            part, by = s.split([c, s.shape[1] - c], 1) if self.k > 1 else (s, None)
            out = group(part, F.relu(part), *w[2 * j:2 * j + 2])  # (B, E, c, H', W')
            if by is not None:  # the bypass (PC-DARTS Sec. 3.2), shrunk on strided edges
                by = (self.mp(by) if self.reduction and j < 2 else by).unsqueeze(1)
                if beta_w is not None:  # each outgoing edge's beta times the bypass
                    by = bw[j].view(1, -1, 1, 1, 1) * by
                out = torch.cat([out, by.expand(-1, out.shape[1], -1, -1, -1)], 2)
            # state j's edges feed the last E nodes, so the sums line up at the end
            acc = out if acc is None else acc[:, acc.shape[1] - out.shape[1]:] + out
            if j >= 1:  # node j-1 has all its inputs: it becomes state j+1
                states.append(channel_shuffle(acc[:, 0], self.k))
        return torch.cat(states[-self._multiplier:], dim=1)  # (B, multiplier*C, H', W')

    # -- the plain state dict ----------------------------------------------------------
    def _key_map(self, offset) -> dict:
        """fused name -> its chunks in row order, each (plain names, rows, crop): the plain
        tensor is the chunk's rows (all of the tensor when rows is None), cropped by
        ``crop`` pixels on each side (a 3x3 kernel inside a 5x5); several names: one value
        written under each (the shared BN counter)."""
        c, out, counters = self.C // self.k, {}, []
        for j, (nodes, g) in enumerate(zip(self.targets, self.groups)):
            edges = [f"_ops.{offset[i] + j}._ops." for i in nodes]

            def chunks(*keys, rows=c):  # per key (kind-major), per edge
                return [([e + key], rows, 1 if key.startswith(("4.", "6.")) and
                         key.endswith("1.weight") else 0) for key in keys for e in edges]

            pre = f"groups.{j}."
            out[pre + "sep_dw1"] = chunks("4.0.1.weight", "5.0.1.weight")
            out[pre + "dil_dw"] = chunks("6.1.weight", "7.1.weight")
            out[pre + "pw1"] = chunks("4.0.2.weight", "5.0.2.weight", "6.2.weight", "7.2.weight")
            out[pre + "sep_dw2"] = chunks("4.1.1.weight", "5.1.1.weight")
            out[pre + "pw2"] = chunks("4.1.2.weight", "5.1.2.weight")
            if g.reduce:
                out[pre + "reduce_pw"] = [([e + f"3.{conv}.weight"], c // 2, 0)
                                          for e in edges for conv in ("conv_1", "conv_2")]
            bns = {"mid": ["4.0.3.", "5.0.3."],
                   "final": ["4.1.3.", "5.1.3.", "6.3.", "7.3."] + (["3.bn."] if g.reduce
                                                                    else []) + ["1.1.", "2.1."]}
            for name, prefixes in bns.items():
                for buf in ("mean", "var"):
                    out[f"{pre}{name}_{buf}"] = chunks(*[b + f"running_{buf}" for b in prefixes])
                counters += [e + b + "num_batches_tracked" for b in prefixes for e in edges]

        out["num_batches_tracked"] = [(counters, None, 0)]
        return out

    def _split(self, state: dict, prefix: str):
        """Fused keys of ``state`` (under ``prefix``) -> the plain cell's keys, in order."""
        plain = {}
        for fused, chunks in self._plain_keys.items():
            value, at = state.pop(prefix + fused), 0
            for keys, rows, crop in chunks:
                part = value if rows is None else value[at:at + rows]
                part = part[..., crop:-crop, crop:-crop] if crop else part
                at += rows or 0
                for key in keys:
                    plain[key] = part
        for key in self._plain_order:
            state[prefix + key] = plain[key]

    def _stack(self, state: dict, prefix: str):
        """The plain cell's keys of ``state`` (under ``prefix``) -> the fused keys; where
        one is missing, the fused key stays missing (``load_state_dict`` reports it)."""
        for fused, chunks in self._plain_keys.items():
            names = [prefix + keys[0] for keys, _, _ in chunks]
            if not all(n in state for n in names):
                continue
            parts = [F.pad(state[n], (crop,) * 4) if crop else state[n]
                     for n, (_, _, crop) in zip(names, chunks)]
            state[prefix + fused] = parts[0] if chunks[0][1] is None else torch.cat(parts)
            for keys, _, _ in chunks:
                for key in keys:
                    state.pop(prefix + key, None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._stack(state_dict, prefix)  # before the children read their keys
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _state_dict_hook(module, state_dict, prefix, local_metadata):
    module._split(state_dict, prefix)
