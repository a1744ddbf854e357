"""PC-DARTS on top of DARTS: a differentiable search where K=1 without edge normalization
*is* DARTS.

DARTS (Liu, Simonyan, Yang, ICLR 2019): Sec. 2.2 continuous relaxation (Eq. 1-2, the mixed
op is a softmax(alpha)-weighted sum of every candidate op), Sec. 2.3 bilevel optimization
(Eq. 3-4: weights on one half of the training set, alphas on the other; first order, or the
unrolled second order step with the finite-difference Hessian-vector product of Eq. 7-8),
Sec. 2.4 derivation (per node the 2 strongest non-none edges). Official ``model_search.py``
and ``architect.py``.

PC-DARTS (Xu et al., ICLR 2020): Sec. 3.2 partial channel connections (1/K of the channels
through the mixed op, the rest bypassed, then a channel shuffle), Sec. 3.3 edge
normalization (one beta per edge, softmax over each node's incoming edges, which also
ranks the edges at derivation), Sec. 4.2 search settings (warm-up of 15 weight-only
epochs, batch 256, lr 0.1, arch lr 6e-4). Official ``model_search.py``.

The supernet here is written like the official code: :class:`MixedOp` is Eq. 2 as it
stands (every op, ``none`` included, each with its own ReLU), :class:`SearchCell` takes the
partial channels, bypass and shuffle per edge, then sums the edges with their betas. The
search runs the same supernet through its speed paths, tested equal to this one (same
state dict, logits and gradients): :mod:`nas_tutorial.fast.pc_darts` (``SearchNetwork(...,
fast=True)``: exact rewrites of the cell, listed there, and the CPU memory layout per K)
and :mod:`nas_tutorial.fast.fused` (``fused=True``: the mixed ops of all edges leaving a
state as a few large operators; where it is faster: ``fast.pc_darts.CPU_FUSED``).
The search step saves work too, exactly: the architecture step asks autograd for the
gradients of alpha/beta only, with the weights frozen for its passes (so that the depthwise
convs' custom backward skips their weight gradients too), the weight step for the weights
only; the second order step reuses the network in place (the official code builds a new
network every step); no host sync inside an epoch.

Deviations, all deliberate: the ``quick`` preset is a scaled-down search (16 px Fashion-MNIST, 3 nodes,
10x arch lr) for a CPU; every epoch also evaluates the architecture half (PC-DARTS only
does it in the last epoch); the unrolled step restores the BN statistics its virtual step
touched (the official code ran it on a throw-away copy of the network); on CUDA the weight
step and the first-order architecture step run under bf16 autocast, but the second-order
step (virtual step and finite-difference Hessian-vector product) always runs in fp32,
because bf16 cannot resolve its 0.01/||v|| perturbation (the official code is fp32
throughout); epoch e uses lr = cosine(e), PyTorch's documented order (the official loop
calls ``scheduler.step()`` first, so its epoch e uses cosine(e + 1): it never trains at the
full lr and reaches lr_min in its last epoch); the architecture's validation batches are
drawn without replacement per epoch, in step with the training batches (the official
PC-DARTS code takes the next batch of an endless validation iterator every step: the same
data, another order; DARTS's ``next(iter(valid_queue))`` draws a fresh random batch every
step, with replacement across steps).

Several GPUs or machines (torchrun, :mod:`nas_tutorial.distributed`): every process draws
the same global batch from identically seeded loaders and keeps its shard; after each
backward the weight gradients, and in the architecture step the alpha/beta gradients (in
the unrolled step also the virtual step's, v's and the finite-difference gradients), are
averaged over the processes, so every process holds the same weights, alpha and beta and
derives the same genotype. The partial channels are the first C/K of each state (official
code, no sampling) and the shuffle is a fixed permutation: nothing random per process. BN
uses each process's shard statistics (the official multi-GPU code's behaviour too).

Left out: the ImageNet search (K=2, batch 1024, lr 0.5); the DARTS RNN space.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..config import preset_name, select
from ..data import DATASETS, DeviceLoader, load, split
from ..devices import full_fp32, resolve_device, threads
from ..genotypes import Genotype
from ..ops import DARTS_OPS, OPS, FactorizedReduce, ReLUConvBN, channel_shuffle
from ..checkpoints import capture, restore, save, write_json
from ..fast.pc_darts import (apply_layout, arch_optimizer, cell_class, uses_channels_last,
                             uses_fused_cells, weight_optimizer)
from ..checkpoints import RunFolderError, read_checkpoint
from ..training import (Diverged, History, autocast, diverged, evaluate, nonfinite,
                        progress_bar)


class SearchDiverged(Diverged):
    """A NaN or Inf in the loss or in alpha/beta; the last good checkpoint is kept (a
    :class:`~nas_tutorial.training.Diverged`, like the other methods' training)."""


# -- the supernet ------------------------------------------------------------------------
class MixedOp(nn.Module):
    """One edge's candidate ops on ``C`` channels (already C/K of the state), summed with
    the softmax(alpha) weights: DARTS Eq. 2. Every op is there, ``none`` included, each
    with its own leading ReLU; search ops use non-affine BN and the pools get one too
    (official ``model_search.MixedOp``)."""

    def __init__(self, C: int, stride: int, primitives=DARTS_OPS):
        super().__init__()
        self._ops = nn.ModuleList()
        for name in primitives:
            op = OPS[name](C, stride, False)
            if "pool" in name:  # the convs end in a BN, a pool does not: this one puts it
                # on their scale, so that alpha compares the ops and not their magnitudes
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        # x: (B, C, H, W); weights: (len(primitives),) -> (B, C, H/stride, W/stride)
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class SearchCell(nn.Module):
    """A DARTS cell (DARTS Sec. 2.1) with partial channels (PC-DARTS Sec. 3.2) and edge
    normalization (Sec. 3.3): node i = sum over earlier states j of beta_j * edge_j(state_j),
    beta_j = 1 without edge normalization (DARTS)."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 k, primitives=DARTS_OPS):
        super().__init__()
        self.reduction, self.k, self.C = reduction, k, C
        self._steps, self._multiplier = steps, multiplier
        # The two inputs are brought to C channels; a reduction before halved the size of
        # s1 but not of s0, so s0 is halved here (factorized reduce).
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList()  # one MixedOp per edge: 2, 3, 4, ... into the nodes
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1  # a reduction cell halves its inputs
                self._ops.append(MixedOp(C // k, stride, primitives))
        # The bypassed channels of a strided edge are max-pooled 2x2 (official MixedOp.mp);
        # ceil_mode keeps odd sizes aligned with the strided ops (equal for even sizes).
        self.mp = nn.MaxPool2d(2, 2, ceil_mode=True)

    def edge(self, e: int, x, weights):
        """Edge ``e`` on state ``x`` (B, C, H, W), a partial channel connection (Sec. 3.2,
        official PC-DARTS ``MixedOp.forward``): the first C/K channels go through the mixed
        op, the rest bypass it, and a shuffle interleaves the two so that the next edge's
        first C/K channels are not always the same ones."""
        c = self.C // self.k
        out = self._ops[e](x[:, :c], weights)  # (B, C/K, H', W')
        if self.k == 1:  # DARTS: every channel goes through
            return out
        rest = x[:, c:]  # (B, C - C/K, H, W)
        if out.shape[2] != x.shape[2]:  # a strided edge: the bypass must shrink as well
            rest = self.mp(rest)
        return channel_shuffle(torch.cat([out, rest], 1), self.k)  # (B, C, H', W')

    def forward(self, s0, s1, alpha_w, beta_w=None):
        # alpha_w: (E, n_ops) softmax(alpha); beta_w: (E,) per-node softmax(beta) or None
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # (B, C, H, W) each
        offset = 0
        for i in range(self._steps):
            edges = [self.edge(offset + j, h, alpha_w[offset + j]) for j, h in enumerate(states)]
            if beta_w is not None:  # edge normalization: each edge weighted by its beta
                edges = [beta_w[offset + j] * e for j, e in enumerate(edges)]
            offset += len(states)
            states.append(sum(edges))  # node i: (B, C, H', W')
        return torch.cat(states[-self._multiplier:], dim=1)  # (B, multiplier*C, H', W')


def node_softmax(beta: torch.Tensor, steps: int) -> torch.Tensor:
    """Edge normalization (PC-DARTS Sec. 3.3): softmax of beta over each node's incoming
    edges, groups [0:2], [2:5], [5:9], [9:14] for 4 steps."""
    out, start = [], 0
    for i in range(steps):
        out.append(F.softmax(beta[start:start + 2 + i], dim=-1))
        start += 2 + i
    return torch.cat(out)


class SearchNetwork(nn.Module):
    """The search supernet (official ``model_search.Network``): stem 3x3 conv to 3C + BN,
    ``layers`` search cells with reductions at layers//3 and 2*layers//3, global pooling,
    a linear classifier. ``k=1, edge_norm=False`` is the DARTS supernet.

    ``fast=True`` / ``fused=True`` build the cells of :mod:`nas_tutorial.fast.pc_darts` /
    :mod:`nas_tutorial.fast.fused` (what the search runs): same function, same state dict."""

    def __init__(self, C: int, num_classes: int, layers: int, k: int = 4,
                 edge_norm: bool = True, steps: int = 4, multiplier: int = 4,
                 in_channels: int = 3, primitives=DARTS_OPS, fast: bool = False,
                 fused: bool = False):
        super().__init__()
        _check_shape(C, k, layers, steps, multiplier)
        self.C, self.k, self.edge_norm, self.fast, self.fused = C, k, edge_norm, fast, fused
        self._layers, self._steps, self._multiplier = layers, steps, multiplier
        self.primitives = tuple(primitives)
        C_curr = 3 * C  # stem_multiplier = 3
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = cell_class(SearchCell, fast, fused, self.primitives)
            self.cells.append(cell(steps, multiplier, C_prev_prev, C_prev, C_curr,
                                   reduction, reduction_prev, k, self.primitives))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        # Architecture parameters start as 1e-3 * randn (official _initialize_alphas).
        n_edges = sum(2 + i for i in range(steps))
        n_ops = len(self.primitives)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        if edge_norm:
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(n_edges))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(n_edges))

    def arch_parameters(self) -> list:
        names = ["alpha_normal", "alpha_reduce"] + (["beta_normal", "beta_reduce"]
                                                    if self.edge_norm else [])
        return [getattr(self, n) for n in names]

    def weight_parameters(self) -> list:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_weights(self) -> dict:
        """softmax(alpha) per edge and, with edge normalization, per-node softmax(beta)."""
        out = {"normal": F.softmax(self.alpha_normal, -1),
               "reduce": F.softmax(self.alpha_reduce, -1)}
        if self.edge_norm:
            out["beta_normal"] = node_softmax(self.beta_normal, self._steps)
            out["beta_reduce"] = node_softmax(self.beta_reduce, self._steps)
        return out

    def forward(self, x):
        w = self.arch_weights()
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, w[kind], w.get("beta_" + kind))
        return self.classifier(self.global_pooling(s1).flatten(1))

    @torch.no_grad()
    def genotype(self) -> Genotype:
        w = {k: v.float().cpu().tolist() for k, v in self.arch_weights().items()}
        return derive_genotype(w["normal"], w["reduce"], w.get("beta_normal"),
                               w.get("beta_reduce"), self._steps, self._multiplier,
                               self.primitives)


def _check_shape(C, k, layers, steps, multiplier):
    if min(C, k, layers, steps, multiplier) < 1:
        raise ValueError("C, k, layers, steps and multiplier must be positive")
    if C % 2:
        raise ValueError(f"C must be even (factorized reduce halves it), got C={C}")
    if C % k:
        raise ValueError(f"k={k} must divide C={C}: 1/K of the channels go through the "
                         f"mixed op (choose k among {[d for d in range(1, C + 1) if C % d == 0]})")
    if multiplier > steps:
        raise ValueError(f"multiplier={multiplier} must be <= steps={steps}")


def derive_genotype(alpha_normal, alpha_reduce, beta_normal=None, beta_reduce=None,
                    steps: int = 4, multiplier: int = 4, primitives=DARTS_OPS) -> Genotype:
    """The discrete cell (DARTS Sec. 2.4; PC-DARTS Sec. 3.3, official ``genotype()``).

    Inputs are softmax weights (nested lists or tensors): ``alpha_*`` (E, n_ops), ``beta_*``
    (E,) already normalized per node. Each edge's op weights are multiplied by its beta;
    every node keeps the 2 edges whose largest non-none weight is largest (stable sort:
    ties go to the earlier input), and each kept edge its strongest non-none op.
    """
    none = primitives.index("none") if "none" in primitives else -1

    def parse(alpha, beta):
        alpha = alpha.tolist() if hasattr(alpha, "tolist") else alpha
        beta = beta.tolist() if hasattr(beta, "tolist") else beta
        gene, start = [], 0
        for i in range(steps):
            n = 2 + i
            W = [[a * (beta[start + j] if beta is not None else 1.0) for a in alpha[start + j]]
                 for j in range(n)]
            best = [max((k for k in range(len(W[j])) if k != none), key=lambda k: (W[j][k], -k))
                    for j in range(n)]
            edges = sorted(range(n), key=lambda j: -W[j][best[j]])[:2]
            gene += [(primitives[best[j]], j) for j in edges]
            start += n
        return gene

    concat = list(range(2 + steps - multiplier, steps + 2))
    return Genotype(parse(alpha_normal, beta_normal), concat,
                    parse(alpha_reduce, beta_reduce), concat)


# Ops without weights: pooling and the identity skip (DARTS Sec. 3.1.1 / PC-DARTS Sec. 4.4
# name a normal cell crowded with them, skips above all, as the collapse of a search).
PARAM_FREE = frozenset({"max_pool_3x3", "avg_pool_3x3", "skip_connect", "none"})


def param_free_count(genotype: Genotype, cell: str = "normal") -> int:
    """Parameter-free ops among the ``cell``'s pairs (2 per node)."""
    return sum(op in PARAM_FREE for op, _ in getattr(genotype, cell))


# -- configuration -----------------------------------------------------------------------
@dataclass(frozen=True)
class SearchConfig:
    """One search run. Defaults are PC-DARTS's CIFAR-10 search (Sec. 4.2, official
    ``train_search.py``); see ``PRESETS`` for DARTS and the quick CPU setting."""

    method: str = "pc-darts"       # "pc-darts" or "darts" (names the run; k/edge_norm decide)
    dataset: str = "cifar10"       # one of nas_tutorial.data.DATASETS
    image_size: int | None = None  # resize the images to this side; None = native
    train_images: int | None = None  # a fixed subset of the training set, halved; None = all
    train_portion: float = 0.5     # weights on this half, alpha/beta on the rest (Sec. 2.3)
    C: int = 16                    # initial channels of the supernet
    layers: int = 8                # cells in the supernet
    steps: int = 4                 # intermediate nodes per cell
    multiplier: int = 4            # nodes concatenated into the cell output
    k: int = 4                     # partial channels: 1/K go through the ops (PC-DARTS: 4)
    edge_norm: bool = True         # edge normalization beta (PC-DARTS Sec. 3.3)
    epochs: int = 50               # search epochs (both papers)
    batch_size: int = 256          # images per step, same for both halves (DARTS: 64)
    lr: float = 0.1                # SGD lr, cosine-annealed (DARTS: 0.025)
    lr_min: float = 0.0            # cosine floor (PC-DARTS 0, DARTS 0.001)
    momentum: float = 0.9
    weight_decay: float = 3e-4     # on weights
    grad_clip: float = 5.0         # max global norm of the weight gradient
    arch_lr: float = 6e-4          # Adam lr for alpha/beta (DARTS: 3e-4)
    arch_weight_decay: float = 1e-3
    arch_betas: tuple = (0.5, 0.999)
    warmup_epochs: int = 15        # weight-only epochs before alpha/beta move (DARTS: 0)
    unrolled: bool = False         # second order architecture step (DARTS Sec. 2.3)
    seed: int = 0                  # fixes init, halves, batches (on CPU exactly)
    steps_per_epoch: int | None = None  # cap on steps per epoch (None = the whole half)
    record_every: int = 0          # also record alpha/beta/genotype every N steps; 0 = off
    amp: bool = True               # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True     # NHWC where measured faster (uses_channels_last)
    compile: bool = False          # torch.compile the supernet (CUDA only)
    fused: bool = True             # fused cells (where faster: uses_fused_cells), optimizers
    cpu_threads: int | None = None  # torch threads for a CPU search, restored after; None = as is

    def __post_init__(self):
        object.__setattr__(self, "arch_betas", tuple(self.arch_betas))
        if self.method not in ("pc-darts", "darts"):
            raise ValueError(f"unknown method '{self.method}'; choose pc-darts or darts")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset '{self.dataset}'; choose one of "
                             f"{', '.join(DATASETS)}")
        _check_shape(self.C, self.k, self.layers, self.steps, self.multiplier)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if not 0 <= self.warmup_epochs:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 < self.train_portion < 1:
            raise ValueError(f"train_portion must be in (0, 1), got {self.train_portion}")


PRESETS = {
    # About two minutes on one CPU core: 16 px Fashion-MNIST, C=8, 4 cells of 3 nodes; 4 epochs of
    # 31 batches of 64 (4,000 images: two halves of 2,000, each epoch reads its half once), the
    # first 2 weight-only. Chosen by measurement (benchmarks/pc_darts_quick_sweep.py, data/runs/pc-
    # darts-quick-sweep.json): of five protocols on tuning seeds 100 and 101, retrained with the
    # pc-darts table's protocol, this one placed the found cells highest among the table's random
    # cells (on those seeds; on seeds 0-4 it placed 1 of 5 above the random median: data/runs/pc-
    # darts-quick-study.json; 0 of 5 when run again after the exact CPU rewrites: pc-darts-quick-
    # restudy.json). The paper warms up 15 of 50 epochs; half the run here, because 62 weight steps
    # are all the supernet gets before alpha moves. The arch lr is 10x the paper's: 62 arch steps
    # instead of ~3,400.
    "quick": SearchConfig(dataset="fashion_mnist", image_size=16, train_images=4000,
                          C=8, layers=4, steps=3,
                          multiplier=3, k=4, epochs=4, batch_size=64, lr=0.1, lr_min=0.0,
                          arch_lr=6e-3, warmup_epochs=2, steps_per_epoch=None,
                          # thousands of tiny ops per step: on a busy 2-core machine two
                          # threads measured 5-30x slower than one (OpenMP barriers)
                          cpu_threads=1),
    # PC-DARTS on CIFAR-10 (Sec. 4.2): batch 256, lr 0.1, arch lr 6e-4, 15 warm-up epochs.
    "full": SearchConfig(),
    # A notebook on one GPU (run.gpu_budget): 39 steps an epoch; arch lr 10x as in quick.
    "gpu": SearchConfig(train_images=20000, epochs=15, warmup_epochs=5, arch_lr=6e-3),
}
# The quick search given tens of minutes on one core, for a recorded run (data/runs/): the
# paper's C=16 (4 channels through each op at K=4 instead of 2), 8,000 images (62 steps an
# epoch), 10 epochs with the same half of warm-up. Retrained and placed with the quick table.
PRESETS["long"] = replace(PRESETS["quick"], C=16, train_images=8000, epochs=10, warmup_epochs=5)
for _name in ("quick", "long", "gpu"):  # DARTS on the same budget: every channel, no beta
    PRESETS[f"{_name}-darts"] = replace(PRESETS[_name], method="darts", k=1, edge_norm=False,
                                        arch_lr=3e-3, warmup_epochs=0)
# DARTS (Sec. 3.1.1): batch 64, lr 0.025 cosine to 0.001, arch lr 3e-4, no warm-up.
PRESETS["full-darts"] = SearchConfig(method="darts", k=1, edge_norm=False, batch_size=64,
                                     lr=0.025, lr_min=0.001, arch_lr=3e-4, warmup_epochs=0)


# Search-only presets on a base preset's data and retraining (its table): ``long`` is the
# quick setting given tens of CPU minutes, recorded under data/runs/ for the notebooks.
LONGER = {"long": "quick"}


def data_preset(preset: str | None = None) -> str:
    """The preset whose data, retraining protocol and table a search ``preset`` uses."""
    return LONGER.get(preset, None) or preset_name(preset)


def get_config(method: str = "pc-darts", preset: str | None = None, **overrides) -> SearchConfig:
    """The ``method``'s config for ``preset`` (``quick``/``full``, or ``long``: the quick
    search given tens of minutes; default from ``nt.get_preset()``: full on CUDA, quick on
    CPU), with field overrides."""
    if method not in ("pc-darts", "darts"):
        raise ValueError(f"unknown method '{method}'; choose pc-darts or darts")
    name = preset if preset in LONGER else preset_name(preset)
    return select(PRESETS, name if method == "pc-darts" else f"{name}-darts", overrides)


# -- the architecture step --------------------------------------------------------------
def _loss(model, x, y, device, amp):
    with autocast(device, amp):
        return F.cross_entropy(model(x).float(), y)


def _loss_fp32(model, x, y, device):
    """The loss in float32 whatever autocast is on. The second-order step differences two
    gradients taken R = 0.01/||v|| apart, far below bf16's resolution (8 bits of mantissa):
    measured on a 5-cell K=4 supernet at lr 0.1 under emulated bf16 autocast, its gradient
    had cosine 0.89 with the float64 one (fp32: 1.0000). The backward passes must run with
    autocast off too, and TF32 off on CUDA: :meth:`Architect.unrolled_grads` runs whole
    under :func:`~nas_tutorial.devices.full_fp32`."""
    with full_fp32():
        out = model(x)
        # at least fp32: a float64 reference network keeps its float64 loss
        return F.cross_entropy(out.to(torch.promote_types(out.dtype, torch.float32)), y)


@contextlib.contextmanager
def _frozen(params):
    """``params`` need no gradient inside the block. The architecture step wants d/d alpha
    only: torch's own kernels skip the weight gradients then anyway, but a custom autograd
    Function (``fast.convs.DepthwiseConv2d``) is only told what requires grad, so without
    this it computes every depthwise weight gradient for nothing (the K=4 architecture pass,
    2 CPU threads: 1.32 s instead of 1.62 s). Same numbers either way."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _grad(loss, params):
    # A network with fewer than 3 cells has no normal cell: its alphas get zero gradient.
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


class Architect:
    """Updates alpha (and beta) on validation batches with Adam (DARTS ``architect.py``).

    First order: grad_alpha L_val(w, alpha). Second order (DARTS Eq. 7-8): with
    w' = w - lr * (momentum * buf + grad_w L_train + wd * w),
    grad = grad_alpha L_val(w', alpha) - lr * [grad_alpha L_train(w+) - grad_alpha
    L_train(w-)] / 2R, w+- = w +- R v, v = grad_w' L_val(w', alpha), R = 0.01 / ||v||.

    Under torchrun every gradient above is averaged over the processes as soon as it is
    taken (each process holds a shard of the batches), so each is the gradient of the mean
    loss over the global batch and every process steps alpha/beta alike.
    """

    def __init__(self, model: SearchNetwork, config: SearchConfig, device=torch.device("cpu"),
                 forward=None):
        # ``forward``: a compiled view of ``model`` (same parameters) for the forward passes.
        self.model, self.config, self.device = model, config, device
        # ``forward or model`` would ask a compiled module for its truth value, which it refuses
        self.forward = forward if forward is not None else model
        self.r = 1e-2  # R = r / ||v|| of the finite difference (DARTS Sec. 2.3 / architect.py)
        self.optimizer = arch_optimizer(model, config)  # Adam (DARTS Sec. 2.3), fused

    def step(self, x_train, y_train, x_valid, y_valid, lr, w_optimizer=None):
        """One Adam step on alpha/beta; returns the validation loss (a device tensor)."""
        if self.config.unrolled:
            grads, loss = self.unrolled_grads(x_train, y_train, x_valid, y_valid, lr, w_optimizer)
        else:
            with _frozen(self.model.weight_parameters()):
                loss = _loss(self.forward, x_valid, y_valid, self.device, self.config.amp)
                grads = _grad(loss, self.model.arch_parameters())
            grads = distributed.all_reduce_mean(grads)
        for p, g in zip(self.model.arch_parameters(), grads):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def unrolled_grads(self, x_train, y_train, x_valid, y_valid, lr, w_optimizer=None):
        with full_fp32():  # forward and backward passes, all in real fp32 (no bf16, no TF32)
            return self._unrolled_grads(x_train, y_train, x_valid, y_valid, lr, w_optimizer)

    def _unrolled_grads(self, x_train, y_train, x_valid, y_valid, lr, w_optimizer=None):
        cfg, model, dev = self.config, self.model, self.device
        weights, arch = model.weight_parameters(), model.arch_parameters()
        # w' = one virtual SGD step; done in place and undone (no second network). All of
        # the second-order step runs in fp32 (_loss_fp32), even when the search uses bf16.
        loss = _loss_fp32(self.forward, x_train, y_train, dev)
        g_w = distributed.all_reduce_mean(_grad(loss, weights))
        saved = [w.detach().clone() for w in weights]
        buffers = [b.detach().clone() for b in model.buffers()]
        with torch.no_grad():
            for w, g in zip(weights, g_w):
                buf = (w_optimizer.state.get(w, {}).get("momentum_buffer")
                       if w_optimizer is not None else None)
                moment = cfg.momentum * buf if buf is not None else 0.0
                w.sub_(lr * (moment + g + cfg.weight_decay * w))
        loss_val = _loss_fp32(self.forward, x_valid, y_valid, dev)
        grads = distributed.all_reduce_mean(_grad(loss_val, arch + weights))
        d_alpha, v = grads[:len(arch)], grads[len(arch):]
        with torch.no_grad():  # back to w; the virtual step's BN statistics are dropped too
            for w, s in zip(weights, saved):
                w.copy_(s)
            for b, s in zip(model.buffers(), buffers):
                b.copy_(s)
        hvp = self._hessian_vector_product(v, x_train, y_train, self.r)
        return [g - lr * h for g, h in zip(d_alpha, hvp)], loss_val

    def _hessian_vector_product(self, v, x, y, r=1e-2):
        weights, arch = self.model.weight_parameters(), self.model.arch_parameters()
        R = r / torch.cat([t.flatten() for t in v]).norm()
        grads = []
        for sign in (1.0, -2.0):  # to w + R v, then to w - R v
            with torch.no_grad():
                for w, t in zip(weights, v):
                    w.add_(t, alpha=sign * R)
            with _frozen(weights):
                loss = _loss_fp32(self.forward, x, y, self.device)
                g = _grad(loss, arch)
            grads.append(distributed.all_reduce_mean(g))
        with torch.no_grad():
            for w, t in zip(weights, v):
                w.add_(t, alpha=R)
        return [(p - n) / (2 * R) for p, n in zip(*grads)]


# -- history and checkpoints ---------------------------------------------------------------
@dataclass
class SearchHistory(History):
    """Per-epoch record of a search: the training curves of :class:`History` (valid = the
    architecture half) plus softmax(alpha), softmax(beta) and the derived genotype."""

    alpha_normal: list = field(default_factory=list)   # per epoch (E, n_ops) softmax(alpha)
    alpha_reduce: list = field(default_factory=list)
    beta_normal: list = field(default_factory=list)    # per epoch (E,) softmax per node
    beta_reduce: list = field(default_factory=list)
    genotype: list = field(default_factory=list)       # per epoch, Genotype.to_dict()
    steps: list = field(default_factory=list)          # every-N-step records (record_every)
    primitives: list = field(default_factory=lambda: list(DARTS_OPS))

    def genotypes(self) -> list:
        return [Genotype.from_dict(g) for g in self.genotype]

    def __repr__(self) -> str:
        if not self.epoch:
            return "SearchHistory(empty)"
        return (f"SearchHistory({len(self.epoch)} epochs, valid acc {self.valid_acc[-1]:.3f}, "
                f"genotype {self.genotypes()[-1]})")


@dataclass
class SearchResult:
    genotype: Genotype
    history: SearchHistory
    config: SearchConfig
    network: SearchNetwork
    run_dir: Path | None = None

    def __repr__(self) -> str:
        return (f"SearchResult({self.config.method}, {len(self.history.epoch)} epochs: "
                f"{self.genotype})")


def _snapshot(model: SearchNetwork) -> dict:
    w = {k: v.detach().float().cpu().tolist() for k, v in model.arch_weights().items()}
    return {"alpha_normal": w["normal"], "alpha_reduce": w["reduce"],
            "beta_normal": w.get("beta_normal"), "beta_reduce": w.get("beta_reduce"),
            "genotype": model.genotype().to_dict()}



CHECKPOINT = "checkpoint.pt"


def config_of(state: dict, where) -> SearchConfig:
    """The :class:`SearchConfig` a checkpoint's ``config`` dict describes; one line naming
    ``where`` when this version cannot use it."""
    try:  # a checkpoint from before the fused cells resumes in the cells it was made with
        return SearchConfig(**{"fused": False, **state["config"]})
    except (TypeError, ValueError) as e:
        raise RunFolderError(f"{where} holds a config this version cannot use ({e}); start "
                             f"a new run with --out") from None


def load_checkpoint(run_dir) -> dict:
    """The checkpoint of the run in ``run_dir`` (or an already read one: a dict), its config
    as a :class:`SearchConfig`. Raises FileNotFoundError without one and ``RunFolderError``
    (one line naming the file) for one that is truncated, empty, not a checkpoint or lacks
    keys."""
    read = isinstance(run_dir, dict)  # read once by the caller (the CLI's checks)
    ckpt = dict(run_dir) if read else read_checkpoint(run_dir, "pc-darts")
    if not isinstance(ckpt["config"], SearchConfig):
        ckpt["config"] = config_of(ckpt, "the checkpoint" if read else Path(run_dir) / CHECKPOINT)
    return ckpt


# -- the search loop -----------------------------------------------------------------------
def search(config: SearchConfig | None = None, out=None, resume=None, device="auto",
           progress: bool = True, callback=None) -> SearchResult:
    """Run (or continue) a search; returns a :class:`SearchResult`.

    ``out``: run folder for the checkpoint (every epoch), ``history.json`` and
    ``genotype.json``; None keeps everything in memory. ``resume``: a run folder to continue
    (its saved config is used; ``out`` defaults to it), or its checkpoint already read
    (:func:`nas_tutorial.checkpoints.read_checkpoint`; then ``out`` names the folder). ``callback(history)`` runs after each
    epoch. Raises :class:`SearchDiverged` on a NaN/Inf loss or alpha/beta.
    """
    device = resolve_device(device)
    ckpt = load_checkpoint(resume) if resume is not None else None  # read once
    where = out if isinstance(resume, dict) else resume
    config = _resolve_config(config, ckpt, device, where)
    if ckpt is not None and out is None:
        if isinstance(resume, dict):
            raise ValueError("a checkpoint read beforehand needs out=, its run folder")
        out = resume
    # a CPU search sets its own thread count (the quick preset: one), restored after
    with threads(config.cpu_threads if device.type == "cpu" else None):
        return _search(config, out, ckpt, device, progress, callback)


def _resolve_config(config, ckpt, device="auto", where=None):
    if ckpt is None:
        return config or get_config(preset=preset_name(None, device))
    saved = ckpt["config"]
    if config is not None and config != saved:
        diff = [f.name for f in fields(SearchConfig)
                if getattr(config, f.name) != getattr(saved, f.name)]
        raise ValueError(f"the run in {where} used another config (differs in "
                         f"{', '.join(diff)}); pass config=None to resume it")
    return saved


def _search(config, out, ckpt, device, progress, callback) -> SearchResult:
    if ckpt is not None:
        distributed.check_world(ckpt.get("world_size"), Path(out) / CHECKPOINT)
    distributed.check_batch(config.batch_size)
    main = distributed.is_main()  # only rank 0 writes files and shows the bar
    run_dir = Path(out) if out is not None else None
    torch.manual_seed(config.seed)
    data = load(config.dataset, train=True, size=config.image_size, device=device,
                n=config.train_images)
    if run_dir is not None and main:  # once the data is there: a refused dataset leaves no folder
        run_dir.mkdir(parents=True, exist_ok=True)
    train_ds, valid_ds = split(data, config.train_portion, seed=config.seed)
    cuda = device.type == "cuda"
    channels_last = uses_channels_last(config, device)
    train_loader = DeviceLoader(train_ds, config.batch_size, train=True, seed=config.seed,
                                drop_last=True, channels_last=channels_last)
    valid_loader = DeviceLoader(valid_ds, config.batch_size, train=True, seed=config.seed + 1,
                                drop_last=True, channels_last=channels_last)
    # the fast or fused cells (nas_tutorial.fast): the same supernet, tested equal, faster
    model = SearchNetwork(config.C, data.num_classes, config.layers, config.k, config.edge_norm,
                          config.steps, config.multiplier, in_channels=data.shape[0],
                          fast=True, fused=uses_fused_cells(config, device)).to(device)
    distributed.broadcast_parameters(model)  # every rank starts from rank 0's supernet
    apply_layout(model, config, device)
    forward_model = model
    if config.compile and cuda:
        forward_model = torch.compile(model)
    w_optimizer = weight_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, config.epochs,
                                                           eta_min=config.lr_min)
    architect = Architect(model, config, device, forward=forward_model)
    history, start = SearchHistory(primitives=list(model.primitives)), 0
    # everything a resumed search needs to go on as if never stopped (the checkpoint's keys)
    parts = {"model": model, "w_optimizer": w_optimizer, "a_optimizer": architect.optimizer,
             "scheduler": scheduler, "train_loader": train_loader, "valid_loader": valid_loader}
    if ckpt is not None:
        restore(ckpt, parts, Path(out) / CHECKPOINT if out is not None else None)
        torch.set_rng_state(ckpt["rng"])
        history, start = SearchHistory.from_dict(ckpt["history"]), ckpt["epoch"]

    steps = len(train_loader) if config.steps_per_epoch is None else min(
        len(train_loader), config.steps_per_epoch)
    # closed on any exit, Ctrl-C included, so a notebook shows no stale bar
    with progress_bar(config.epochs * steps, config.method, progress and main,
                      initial=start * steps) as bar:
        weights = model.weight_parameters()
        for epoch in range(start, config.epochs):
            t0 = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            search_arch = epoch >= config.warmup_epochs  # PC-DARTS warm-up (Sec. 4.2)
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            finite = torch.ones((), device=device, dtype=torch.bool)
            seen = 0
            for step, ((x, y), (xv, yv)) in enumerate(zip(train_loader, valid_loader)):
                if step == steps:
                    break
                # this rank's rows of both global batches (the same rows on every rank: the
                # loaders are seeded alike)
                x, y, xv, yv = *distributed.shard(x, y), *distributed.shard(xv, yv)
                if search_arch:  # arch first, then weights (official train loop order)
                    vloss = architect.step(x, y, xv, yv, lr, w_optimizer)
                    finite &= torch.isfinite(vloss)
                with autocast(device, config.amp):
                    logits = forward_model(x)
                loss = F.cross_entropy(logits.float(), y)
                w_optimizer.zero_grad(set_to_none=True)
                loss.backward(inputs=weights)  # gradients for the weights only
                distributed.all_reduce_grads(weights)  # the global batch's gradient
                nn.utils.clip_grad_norm_(weights, config.grad_clip)
                w_optimizer.step()
                finite &= torch.isfinite(loss.detach())
                loss_sum += loss.detach() * y.numel()
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.numel()
                if config.record_every and (step + 1) % config.record_every == 0:
                    history.steps.append({"epoch": epoch + 1, "step": step + 1, **_snapshot(model)})
                bar.update(1)
            if distributed.active():  # the global batch's numbers, in one collective
                distributed.average_buffers(model)
                loss_sum, correct, bad, seen = distributed.all_reduce_sum(
                    loss_sum, correct, (~finite).long(), torch.tensor(seen, device=device))
                finite, seen = bad == 0, int(seen)
            bad = nonfinite(finite, model)  # the one host sync of the epoch
            if bad is not None:  # "weights" covers alpha and beta too
                kept = f"epoch {epoch}, {run_dir / CHECKPOINT}" if run_dir and epoch else None
                raise diverged("search", epoch + 1, bad, kept, "a lower lr or arch_lr",
                               cls=SearchDiverged)
            scheduler.step()
            history.epoch.append(epoch + 1)
            history.lr.append(lr)
            history.train_loss.append(loss_sum.item() / max(seen, 1))
            history.train_acc.append(correct.item() / max(seen, 1))
            vl, va = evaluate(model, valid_ds, device, batch_size=512, amp=config.amp)
            history.valid_loss.append(vl)
            history.valid_acc.append(va)
            snap = _snapshot(model)
            for key, value in snap.items():
                getattr(history, key).append(value)
            history.seconds.append(time.perf_counter() - t0)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", acc=f"{va:.3f}")
            if run_dir is not None and main:
                save(capture(parts, config=asdict(config), epoch=epoch + 1,
                             rng=torch.get_rng_state(), history=history.to_dict(),
                             world_size=distributed.world_size()), run_dir / CHECKPOINT)
                write_json(run_dir / "history.json", history.to_dict())
                write_json(run_dir / "genotype.json", snap["genotype"])
            if callback is not None:
                callback(history)
    model.eval()
    genotype = model.genotype()
    return SearchResult(genotype, history, config, model, run_dir)
