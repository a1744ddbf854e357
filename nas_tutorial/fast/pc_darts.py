"""The PC-DARTS search cell rewritten for speed, and the search's memory layout per K.

:class:`FastSearchCell` computes what the plain cell of :mod:`nas_tutorial.pc_darts` computes
(PC-DARTS Sec. 3.2-3.3, the official ``model_search.py``): same constructor, same
``forward(s0, s1, alpha_w, beta_w)``, same parameter and buffer names, so a checkpoint
loads into either and one can stand in for the other. ``SearchNetwork(..., fast=True)``
builds it, and the search does. ``tests/test_pc_darts.py`` holds the two equal: same
logits, same gradients for alpha, beta and every weight, in float64, at K = 1, 2, 4 with
and without edge normalization, reduction cells included.

Exact rewrites of the official computation, for speed (performance.md):

- the ``none`` op is skipped (its output is exactly zero);
- the leading ReLU of the conv ops and of the factorized reduce is applied once per state
  and shared by every edge and op reading it (ReLU is elementwise, so this is exact);
- the channel shuffle and the beta weighting happen once per node, not once per edge:
  shuffle is a fixed permutation, so sum_j b_j * shuffle(cat(mix_j, bypass_j)) =
  shuffle(cat(sum_j b_j mix_j, sum_j b_j bypass_j)), and b_j folds into the 8 op weights;
- a pool has no weights, so the edges leaving one state all pool alike: each state is
  max- and avg-pooled once (5 times per cell instead of 14), and each edge applies its own
  BN to the shared result;
- the supernet's depthwise convs take an exact shortcut in their CPU backward
  (:func:`nas_tutorial.fast.convs.fast_backward`: the input gradient as a forward conv with
  the kernel turned, the weight gradient in NHWC or over the four parity grids of a dilated
  kernel), and its factorized reduces are one grouped conv (``ops.FactorizedReduce.grouped``).

Exact in exact arithmetic: in floating point the sums are reassociated, so the last bits
differ from the plain cell's (the tests allow 1e-9 relative in float64).

The memory layout (:func:`apply_layout`): NHWC on CUDA; on a CPU per K what
``benchmarks/bench_pc_darts.py`` measured faster (:data:`CPU_CHANNELS_LAST`,
:data:`CPU_OPS_CHANNELS_LAST`), the mixed ops alone in NHWC where the network stays NCHW
(:func:`ops_to`).

This module does not import :mod:`nas_tutorial.pc_darts` (that one imports this one), so
the network and the config are known here by what they have (``cells``, ``k``,
``channels_last``), not by their type.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import DARTS_OPS, OPS, DilConv, FactorizedReduce, ReLUConvBN, SepConv, channel_shuffle
from .convs import fast_backward
from .fused import FusedSearchCell


def _strip_relu(op: nn.Module) -> bool:
    """Drop the op's leading ReLU (the cell applies it once per state); True if it had one."""
    first = op[0][0] if isinstance(op, SepConv) else op
    if isinstance(first, DilConv):
        first[0] = nn.Identity()  # no state: the state dict keeps its keys
        return True
    if isinstance(first, FactorizedReduce):
        first.relu = nn.Identity()
        return True
    return False


class FastMixedOp(nn.Module):
    """``pc_darts.MixedOp`` (DARTS Eq. 2) with the ReLU shared, ``none`` skipped and the
    pools shareable; the same modules under the same names."""

    def __init__(self, C: int, stride: int, primitives=DARTS_OPS):
        super().__init__()
        self._ops = nn.ModuleList()
        self._active, self._pre_relu, self.pools = [], [], []
        for i, name in enumerate(primitives):
            op = fast_backward(OPS[name](C, stride, False))
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
                self.pools.append(i)
            self._ops.append(op)
            if name != "none":  # zero output: skipping it is exact
                self._active.append(i)
                self._pre_relu.append(_strip_relu(op))

    def pooled(self, x) -> dict:
        """The pools' outputs before their BN, {op index: (B, C, H', W')}. A pool has no
        weights, so every edge leaving one state with one stride pools alike: the cell
        computes this once per state and each edge applies only its own BN (exact)."""
        return {i: self._ops[i][0](x) for i in self.pools}

    def forward(self, x, x_relu, weights, pooled=None):
        # x, x_relu: (B, C, H, W) and its ReLU; weights: (len(primitives),);
        # pooled: this state's pool outputs (:meth:`pooled`), or None to pool here
        out = None
        for i, pre in zip(self._active, self._pre_relu):
            if pooled is not None and i in pooled:
                y = self._ops[i][1](pooled[i])  # the edge's own BN on the shared pool
            else:
                y = self._ops[i](x_relu if pre else x)
            y = weights[i] * y
            out = y if out is None else out + y
        return out


class FastSearchCell(nn.Module):
    """``pc_darts.SearchCell`` with one shuffle, one ReLU and one pooling per state or node
    instead of per edge (module docstring); same constructor, forward and state dict."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 k, primitives=DARTS_OPS):
        super().__init__()
        self.reduction, self.k, self.C = reduction, k, C
        self._steps, self._multiplier = steps, multiplier
        # built in the plain cell's order: one seed gives both cells the same weights
        if reduction_prev:
            self.preprocess0 = fast_backward(FactorizedReduce(C_prev_prev, C, affine=False))
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(FastMixedOp(C // k, stride, primitives))
        # The bypassed channels of a strided edge are max-pooled 2x2 (official MixedOp.mp);
        # ceil_mode keeps odd sizes aligned with the strided ops (equal for even sizes).
        self.mp = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.ops_format = None  # memory format of the mixed ops' input; None: the state's

    def forward(self, s0, s1, alpha_w, beta_w=None):
        # alpha_w: (E, n_ops) softmax(alpha); beta_w: (E,) per-node softmax(beta) or None
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # (B, C, H, W) each
        parts = [self._part(s) for s in states]
        bypass = [self._bypass(s, j) for j, s in enumerate(states)]
        pooled = []  # per state, its pool outputs (state j's edges all have one stride)
        offset = 0
        for i in range(self._steps):
            mixed = rest = None
            for j in range(len(states)):
                w = alpha_w[offset + j]
                if beta_w is not None:
                    w = w * beta_w[offset + j]  # fold beta into the op weights: 8 scalars
                op = self._ops[offset + j]
                if len(pooled) == j:  # state j's first edge: its pools serve every edge
                    pooled.append(op.pooled(parts[j][0]))
                m = op(parts[j][0], parts[j][1], w, pooled[j])
                mixed = m if mixed is None else mixed + m
                if bypass[j] is not None:
                    r = bypass[j] if beta_w is None else beta_w[offset + j] * bypass[j]
                    rest = r if rest is None else rest + r
            offset += len(states)
            if self.ops_format is not None:
                mixed = mixed.contiguous(memory_format=torch.contiguous_format)
            node = mixed if rest is None else channel_shuffle(torch.cat([mixed, rest], 1), self.k)
            states.append(node)
            parts.append(self._part(node))
            bypass.append(self._bypass(node, len(states) - 1))
        return torch.cat(states[-self._multiplier:], dim=1)  # (B, multiplier*C, H', W')

    def _part(self, s):
        """The first C/K channels of a state and their ReLU, in the ops' layout."""
        p = s[:, :self.C // self.k]
        if self.ops_format is not None:
            p = p.contiguous(memory_format=self.ops_format)
        return p, F.relu(p)

    def _bypass(self, s, j):
        if self.k == 1:
            return None
        rest = s[:, self.C // self.k:]
        return self.mp(rest) if self.reduction and j < 2 else rest


# -- memory layout ---------------------------------------------------------------------------
# The search step's memory layout on a CPU, per K: NHWC (True) or NCHW, as the newest CPU
# record of `make bench` measured it (benchmarks/bench_pc_darts.py: the same step in both
# layouts, timed in alternation; data/runs/benchmarks-cpu-*.json). A test keeps this table
# and that record in agreement. Measured 2026-12-02 (2 threads, batch 32, C=16, 8 cells,
# 32 px), NHWC time / NCHW time: 0.60 at K=1, 0.91 at K=2, 1.05 at K=4; at K=8 the NHWC
# child had not finished its 12 timed steps after more than 10 minutes (NCHW K=8: 2.8 s a
# step in the main rows) and was stopped by hand (the record says "exit -15"). Partial
# channels slice NHWC tensors along their innermost dimension, which the CPU kernels handle
# badly once the slice is narrow. K=2 stays NCHW although NHWC was 9% faster: with partial
# channels in NHWC, torch 2.14.1's CPU backward was unsafe - on one thread the process died
# ("corrupted double-linked list"; at K=4 "corrupted size vs. prev_size"), on two threads two
# searches with one seed differed from the first steps - and a seed must fix a search. The
# crash was later traced to the conv backward of the factorized reduce's two halves (a
# channel slice of an NHWC cat with 1-2 channels per half), which ops.FactorizedReduce no
# longer builds; whole-network NHWC at K>1 has not been measured again since.
# NHWC at K=1 and NCHW at every K repeat a seeded search exactly (tested).
CPU_CHANNELS_LAST = {1: True, 2: False, 4: False, 8: False}
CPU_NHWC_UNSAFE_K = frozenset({2, 4})  # where the crash / non-repeatability was seen

# Where the network stays NCHW (K > 1), the mixed ops may still run in NHWC: each state's
# first C/K channels are copied once into a contiguous NHWC tensor that every edge and op
# reading the state shares, and the ops' outputs return to NCHW once per node; no narrow
# NHWC slice reaches a kernel. Per K, as the newest CPU record of `make bench` measured it
# (same step, NCHW ops vs NHWC ops, in alternation); a test keeps the two in agreement.
# Measured 2026-12-02 (2 threads, batch 32, C=16, 8 cells), NHWC ops / NCHW ops: 1.02 at
# K=2, 1.18 at K=4, 1.26 at K=8; measured again that day on another machine, after the
# architecture passes stopped taking weight gradients: 0.99, 1.35, 1.47 (and whole-network
# NHWC at K=1 0.88). K=2 stayed NCHW then: 1% either way. Before the depthwise rewrites
# (convs.py) NHWC ops were 10% faster on one thread, but BN over 2-8 channels is slow in
# NHWC, and once the depthwise backward is fast in NCHW too, that is what remains: NCHW
# everywhere.
# Measured 2026-12-04 on an idle machine: 0.94 at K=2, 1.15 at K=4, 1.27 at K=8, so K=2 runs
# its ops in NHWC; since that day it matters only for unfused cells (``fused=False``): the
# fused cells copy no state into the ops' own layout, and a CPU search fuses from K=2.
CPU_OPS_CHANNELS_LAST = {2: True, 4: False, 8: False}


# Fused cells (fast/fused.py) or the unfused fast cells, per K, on a CPU: what the newest CPU
# record of `make bench` measured faster (the same step both ways, in alternation; a test
# keeps the two in agreement). On CUDA always fused: there the step is bound by the number
# of operators. Measured 2026-12-04 (2 threads, batch 32, C=16, 8 cells), fused / unfused:
# 1.91 at K=1, 0.93 at K=2, 0.69 at K=4, 0.49 at K=8 on an idle machine (under load that day:
# 1.93, 0.77, 0.57, 0.90). At K=1 every edge reads all 16 channels of its state and the
# step is bound by arithmetic, which fusion adds to (3x3 kernels run as 5x5, the input is
# copied once per edge): it stays unfused there.
CPU_FUSED = {1: False, 2: True, 4: True, 8: True}


def cell_class(plain, fast: bool, fused: bool, primitives):
    """The search cell a supernet builds: the fused cell (DARTS's op set only: any other
    runs in the unfused fast cell), the fast cell, or ``plain``."""
    if fused and tuple(primitives) == DARTS_OPS:
        return FusedSearchCell
    return FastSearchCell if fast or fused else plain


def fused_optimizer(optimizer, params, fused: bool = True, **kwargs):
    """``optimizer(params, fused=True, **kwargs)``: one operator updates every parameter
    instead of several per parameter (the search step is bound by the number of
    operators), the same update to rounding; unfused where this torch or device has none,
    or with ``fused=False`` (``SearchConfig.fused``: a search as before the fused paths)."""
    params = list(params)
    try:
        return optimizer(params, fused=True, **kwargs) if fused else optimizer(params, **kwargs)
    except (TypeError, RuntimeError):
        return optimizer(params, **kwargs)


def weight_optimizer(model, config) -> torch.optim.SGD:
    """The search's SGD with momentum on the weights (DARTS Sec. 3.1.1; ``config``: a
    ``pc_darts.SearchConfig``), fused where this torch can and ``config.fused`` says."""
    return fused_optimizer(torch.optim.SGD, model.weight_parameters(), config.fused,
                           lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def arch_optimizer(model, config) -> torch.optim.Adam:
    """The search's Adam on alpha and beta (DARTS Sec. 2.3, ``architect.py``), fused where
    this torch can and ``config.fused`` says."""
    return fused_optimizer(torch.optim.Adam, model.arch_parameters(), config.fused,
                           lr=config.arch_lr, betas=config.arch_betas,
                           weight_decay=config.arch_weight_decay)


def uses_fused_cells(config, device) -> bool:
    """The fused cells for this search (``config``: a ``pc_darts.SearchConfig``)? On CUDA
    when configured; on a CPU where :data:`CPU_FUSED` says they were measured faster."""
    if not getattr(config, "fused", False):
        return False
    return torch.device(device).type == "cuda" or CPU_FUSED.get(config.k, True)


def uses_channels_last(config, device) -> bool:
    """NHWC for the supernet (``config``: a ``pc_darts.SearchConfig``)? On CUDA as
    configured (with bf16 autocast NHWC is the fast layout of cuDNN; no GPU was lent to
    measure it here); on a CPU, what the benchmark measured faster for this K
    (:data:`CPU_CHANNELS_LAST`; an unmeasured K gets NCHW)."""
    if not config.channels_last:
        return False
    if torch.device(device).type == "cuda":
        return True
    return CPU_CHANNELS_LAST.get(config.k, False) and config.k not in CPU_NHWC_UNSAFE_K


def ops_channels_last(config, device) -> bool:
    """NHWC for the mixed ops of a supernet that stays NCHW (:data:`CPU_OPS_CHANNELS_LAST`);
    False where the whole network is NHWC already (K=1 on a CPU, any K on CUDA) and where
    the cells are fused (they copy no state into the ops' own layout)."""
    if (not config.channels_last or uses_channels_last(config, device)
            or uses_fused_cells(config, device)):
        return False
    return torch.device(device).type == "cpu" and CPU_OPS_CHANNELS_LAST.get(config.k, False)


def ops_to(model: nn.Module, memory_format):
    """Run the mixed ops of ``model`` (a ``pc_darts.SearchNetwork`` of fast cells) in
    ``memory_format`` (their weights and the shared copy of each state's partial channels)
    while the states keep theirs; None: the states' layout, weights left as they are. See
    :data:`CPU_OPS_CHANNELS_LAST`. Returns ``model``."""
    for cell in model.cells:
        if not isinstance(cell, FastSearchCell):  # the plain cell copies nothing to share
            raise TypeError("ops_to needs the fast cells: SearchNetwork(..., fast=True)")
        cell.ops_format = memory_format
        cell._ops.to(memory_format=memory_format)
    return model


def apply_layout(model: nn.Module, config, device) -> bool:
    """Put ``model`` in the measured layout for this K and device (whole network NHWC, or
    NHWC mixed ops in an NCHW network); True when the batches should be NHWC too."""
    if uses_channels_last(config, device):
        model.to(memory_format=torch.channels_last)
        return True
    if ops_channels_last(config, device):
        ops_to(model, torch.channels_last)
    return False
