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
  (``convs.fast_backward``: the input gradient as a forward conv with the kernel turned,
  the weight gradient in NHWC or over the four parity grids of a dilated kernel), and its
  factorized reduces are one grouped conv (``ops.FactorizedReduce.grouped``);
- the architecture step asks autograd for the gradients of alpha/beta only, with the
  weights frozen for its passes (so that the depthwise convs' custom backward skips their
  weight gradients too), the weight step for the weights only; the second order step
  reuses the network in place (the official code builds a new network every step); no host
  sync inside an epoch.

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

from . import distributed
from .config import preset_name
from .data import DATASETS, DeviceLoader, load, split
from .devices import full_fp32, machine, resolve_device
from .genotypes import Genotype
from .ops import DARTS_OPS, OPS, DilConv, FactorizedReduce, ReLUConvBN, SepConv
from .checkpoints import save, write_json
from .convs import fast_backward
from .runfolders import RunFolderError, read_checkpoint
from .training import Diverged, History, autocast, evaluate


class SearchDiverged(Diverged):
    """A NaN or Inf in the loss or in alpha/beta; the last good checkpoint is kept (a
    :class:`~nas_tutorial.training.Diverged`, like the other methods' training)."""


# -- the supernet ------------------------------------------------------------------------
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle (PC-DARTS Sec. 3.2): view (B, g, C/g, H, W), swap the two
    channel axes, flatten; the g groups interleave, so the next edge's first C/K channels
    mix processed and bypassed ones."""
    if groups == 1:
        return x
    B, C, H, W = x.shape
    return x.view(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


def _strip_relu(op: nn.Module) -> bool:
    """Drop the op's leading ReLU (the cell applies it once per state); True if it had one."""
    first = op[0][0] if isinstance(op, SepConv) else op
    if isinstance(first, DilConv):
        first[0] = nn.Identity()
        return True
    if isinstance(first, FactorizedReduce):
        first.relu = nn.Identity()
        return True
    return False


class MixedOp(nn.Module):
    """Every candidate op on ``C`` channels (already C/K of the edge), summed with weights
    (DARTS Eq. 2). Search ops use non-affine BN, pools get one too (official code)."""

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


class SearchCell(nn.Module):
    """A DARTS cell with partial channels: node i = sum over earlier states j of
    beta_j * MixedOp_j(first C/K channels of state j), the other channels bypassed."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 k, primitives=DARTS_OPS):
        super().__init__()
        self.reduction, self.k, self.C = reduction, k, C
        self._steps, self._multiplier = steps, multiplier
        if reduction_prev:
            self.preprocess0 = fast_backward(FactorizedReduce(C_prev_prev, C, affine=False))
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C // k, stride, primitives))
        # The bypassed channels of a strided edge are max-pooled 2x2 (official MixedOp.mp);
        # ceil_mode keeps odd sizes aligned with the strided ops (equal for even sizes).
        self.mp = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.ops_format = None  # memory format of the mixed ops' input; None: the state's

    def forward(self, s0, s1, alpha_w, beta_w=None):
        # alpha_w: (E, n_ops) softmax(alpha); beta_w: (E,) per-node softmax(beta) or None
        c = self.C // self.k
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
    a linear classifier. ``k=1, edge_norm=False`` is the DARTS supernet."""

    def __init__(self, C: int, num_classes: int, layers: int, k: int = 4,
                 edge_norm: bool = True, steps: int = 4, multiplier: int = 4,
                 in_channels: int = 3, primitives=DARTS_OPS):
        super().__init__()
        _check_shape(C, k, layers, steps, multiplier)
        self.C, self.k, self.edge_norm = C, k, edge_norm
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
            self.cells.append(SearchCell(steps, multiplier, C_prev_prev, C_prev, C_curr,
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

    def ops_to(self, memory_format) -> "SearchNetwork":
        """Run the mixed ops in ``memory_format`` (their weights and the shared copy of each
        state's partial channels) while the states keep theirs; see ``CPU_OPS_CHANNELS_LAST``."""
        for cell in self.cells:
            cell.ops_format = memory_format
            cell._ops.to(memory_format=memory_format)
        return self

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
    # About two minutes on one CPU core: 16 px Fashion-MNIST, C=8, 4 cells of 3 nodes; 4 epochs
    # of 31 batches of 64 (4,000 images: two halves of 2,000, each epoch reads its half once),
    # the first 2 weight-only. Chosen by measurement (benchmarks/pc_darts_quick_sweep.py,
    # data/runs/pc-darts-quick-sweep.json): of five protocols on tuning seeds 100 and 101,
    # retrained with the pc-darts table's protocol, this one placed the found cells highest
    # among the table's random cells (on those seeds; on seeds 0-4 it placed 1 of 5 above the
    # random median: data/runs/pc-darts-quick-study.json; 0 of 5 when run again after the
    # exact CPU rewrites: pc-darts-quick-restudy.json). The paper warms up 15 of 50
    # epochs; half the run here, because 62 weight steps are all the supernet gets before
    # alpha moves. The arch lr is 10x the paper's: 62 arch steps instead of ~3,400.
    "quick": SearchConfig(dataset="fashion_mnist", image_size=16, train_images=4000,
                          C=8, layers=4, steps=3,
                          multiplier=3, k=4, epochs=4, batch_size=64, lr=0.1, lr_min=0.0,
                          arch_lr=6e-3, warmup_epochs=2, steps_per_epoch=None,
                          # thousands of tiny ops per step: on a busy 2-core machine two
                          # threads measured 5-30x slower than one (OpenMP barriers)
                          cpu_threads=1),
    # PC-DARTS on CIFAR-10 (Sec. 4.2): batch 256, lr 0.1, arch lr 6e-4, 15 warm-up epochs.
    "full": SearchConfig(),
}
# The quick search given tens of minutes on one core, for a recorded run (data/runs/): the
# paper's C=16 (4 channels through each op at K=4 instead of 2), 8,000 images (62 steps an
# epoch), 10 epochs with the same half of warm-up. Retrained and placed with the quick table.
PRESETS["long"] = replace(PRESETS["quick"], C=16, train_images=8000, epochs=10,
                          warmup_epochs=5)
PRESETS["quick-darts"] = replace(PRESETS["quick"], method="darts", k=1, edge_norm=False,
                                 arch_lr=3e-3, warmup_epochs=0)
PRESETS["long-darts"] = replace(PRESETS["long"], method="darts", k=1, edge_norm=False,
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
    base = PRESETS[name if method == "pc-darts" else f"{name}-darts"]
    unknown = set(overrides) - {f.name for f in fields(SearchConfig)}
    if unknown:
        raise ValueError(f"unknown SearchConfig fields: {', '.join(sorted(unknown))}")
    return replace(base, **overrides)


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
    Function (``convs.DepthwiseConv2d``) is only told what requires grad, so without this it
    computes every depthwise weight gradient for nothing (the K=4 architecture pass, 2 CPU
    threads: 1.32 s instead of 1.62 s). Same numbers either way."""
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
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=config.arch_lr,
                                          betas=config.arch_betas,
                                          weight_decay=config.arch_weight_decay)

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


def load_checkpoint(run_dir) -> dict:
    """The checkpoint of the run in ``run_dir``, its config as a :class:`SearchConfig`.
    Raises FileNotFoundError without one and ``RunFolderError`` (one line naming the file)
    for one that is truncated, empty, not a checkpoint or lacks keys."""
    ckpt = read_checkpoint(run_dir, "pc-darts")
    try:
        ckpt["config"] = SearchConfig(**ckpt["config"])
    except (TypeError, ValueError) as e:
        raise RunFolderError(f"{Path(run_dir) / CHECKPOINT} holds a config this version "
                             f"cannot use ({e}); start a new run with --out") from None
    return ckpt


# -- the search loop -----------------------------------------------------------------------
def search(config: SearchConfig | None = None, out=None, resume=None, device="auto",
           progress: bool = True, callback=None) -> SearchResult:
    """Run (or continue) a search; returns a :class:`SearchResult`.

    ``out``: run folder for the checkpoint (every epoch), ``history.json`` and
    ``genotype.json``; None keeps everything in memory. ``resume``: a run folder to continue
    (its saved config is used; ``out`` defaults to it). ``callback(history)`` runs after each
    epoch. Raises :class:`SearchDiverged` on a NaN/Inf loss or alpha/beta.
    """
    device = resolve_device(device)
    threads = torch.get_num_threads()
    config = _resolve_config(config, resume, device)
    if device.type == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _search(config, out, resume, device, progress, callback)
    finally:
        torch.set_num_threads(threads)


def _resolve_config(config, resume, device="auto"):
    if resume is None:
        return config or get_config(preset=preset_name(None, device))
    saved = load_checkpoint(resume)["config"]
    if config is not None and config != saved:
        diff = [f.name for f in fields(SearchConfig)
                if getattr(config, f.name) != getattr(saved, f.name)]
        raise ValueError(f"the run in {resume} used another config (differs in "
                         f"{', '.join(diff)}); pass config=None to resume it")
    return saved


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
# NHWC at K=1 0.88). K=2 stays NCHW: 1% either way. Before the depthwise rewrites
# (convs.py) NHWC ops were 10% faster on one thread, but BN over 2-8 channels is slow in
# NHWC, and once the depthwise backward is fast in NCHW too, that is what remains: NCHW
# everywhere.
CPU_OPS_CHANNELS_LAST = {2: False, 4: False, 8: False}


def uses_channels_last(config: SearchConfig, device) -> bool:
    """NHWC for the supernet? On CUDA as configured (with bf16 autocast NHWC is the fast
    layout of cuDNN; no GPU was lent to measure it here); on a CPU, what the benchmark
    measured faster for this K (:data:`CPU_CHANNELS_LAST`; an unmeasured K gets NCHW)."""
    if not config.channels_last:
        return False
    if torch.device(device).type == "cuda":
        return True
    return CPU_CHANNELS_LAST.get(config.k, False) and config.k not in CPU_NHWC_UNSAFE_K


def ops_channels_last(config: SearchConfig, device) -> bool:
    """NHWC for the mixed ops of a supernet that stays NCHW (:data:`CPU_OPS_CHANNELS_LAST`);
    False where the whole network is NHWC already (K=1 on a CPU, any K on CUDA)."""
    if not config.channels_last or uses_channels_last(config, device):
        return False
    return torch.device(device).type == "cpu" and CPU_OPS_CHANNELS_LAST.get(config.k, False)


def apply_layout(model: SearchNetwork, config: SearchConfig, device) -> bool:
    """Put ``model`` in the measured layout for this K and device (whole network NHWC, or
    NHWC mixed ops in an NCHW network); True when the batches should be NHWC too."""
    if uses_channels_last(config, device):
        model.to(memory_format=torch.channels_last)
        return True
    if ops_channels_last(config, device):
        model.ops_to(torch.channels_last)
    return False


def _search(config, out, resume, device, progress, callback) -> SearchResult:
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        out = out if out is not None else resume
        distributed.check_world(ckpt.get("world_size"), Path(resume) / CHECKPOINT)
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
    model = SearchNetwork(config.C, data.num_classes, config.layers, config.k, config.edge_norm,
                          config.steps, config.multiplier, in_channels=data.shape[0]).to(device)
    distributed.broadcast_parameters(model)  # every rank starts from rank 0's supernet
    apply_layout(model, config, device)
    forward_model = model
    if config.compile and cuda:
        forward_model = torch.compile(model)
    w_optimizer = torch.optim.SGD(model.weight_parameters(), lr=config.lr,
                                  momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, config.epochs,
                                                           eta_min=config.lr_min)
    architect = Architect(model, config, device, forward=forward_model)
    history, start = SearchHistory(primitives=list(model.primitives)), 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        w_optimizer.load_state_dict(ckpt["w_optimizer"])
        architect.optimizer.load_state_dict(ckpt["a_optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        train_loader.load_state_dict(ckpt["train_loader"])
        valid_loader.load_state_dict(ckpt["valid_loader"])
        torch.set_rng_state(ckpt["rng"])
        history, start = SearchHistory.from_dict(ckpt["history"]), ckpt["epoch"]

    steps = len(train_loader) if config.steps_per_epoch is None else min(
        len(train_loader), config.steps_per_epoch)
    from .training import progress_bar

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
            arch_ok = all(torch.isfinite(p).all() for p in model.arch_parameters())
            if not bool(finite) or not arch_ok:  # the one host sync of the epoch
                what = "loss" if not bool(finite) else "alpha/beta"
                raise SearchDiverged(
                    f"search diverged in epoch {epoch + 1}: NaN/Inf in the {what}; the last good "
                    f"checkpoint (epoch {epoch}) is kept"
                    + (f" in {run_dir}" if run_dir else "") + "; try a lower lr or arch_lr")
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
                state = {"config": asdict(config), "epoch": epoch + 1, "model": model.state_dict(),
                         "w_optimizer": w_optimizer.state_dict(),
                         "a_optimizer": architect.optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(),
                         "train_loader": train_loader.state_dict(),
                         "valid_loader": valid_loader.state_dict(),
                         "rng": torch.get_rng_state(), "history": history.to_dict(),
                         "world_size": distributed.world_size()}
                save(state, run_dir / CHECKPOINT)
                write_json(run_dir / "history.json", history.to_dict())
                write_json(run_dir / "genotype.json", snap["genotype"])
            if callback is not None:
                callback(history)
    model.eval()
    genotype = model.genotype()
    return SearchResult(genotype, history, config, model, run_dir)


# -- command line ------------------------------------------------------------------------
def table_preset(config: SearchConfig, preset: str | None = None) -> str:
    """The preset whose ``pc-darts`` table a search's cell is placed in: the data preset of
    ``preset`` when given; for a resumed run (no preset on the command line) the preset
    whose search data and cell shape the saved config has."""
    if preset is not None:
        return data_preset(preset)
    for name, base in PRESETS.items():
        if name in ("quick", "full") and (base.dataset, base.image_size, base.steps,
                                          base.multiplier) == (config.dataset, config.image_size,
                                                               config.steps, config.multiplier):
            return name
    return preset_name(None)


def check_retrain(config: SearchConfig, preset: str | None, device="cpu"):
    """The table a ``--retrain`` will place the found cell in, checked before the search
    starts: a missing table, a table made with another protocol than the code's, or a
    search on other data or another cell shape fails in one line, not after minutes."""
    from . import tables

    name = table_preset(config, preset)
    table = tables.load("pc-darts", name)  # FileNotFoundError names the command to make it
    protocol = table.header.get("protocol", {})
    if config.dataset != protocol.get("dataset") or config.steps != protocol.get("search_steps") \
            or config.multiplier != protocol.get("search_multiplier"):
        raise tables.TableError(
            f"--retrain places the cell in the {name} pc-darts table, made for "
            f"{protocol.get('dataset')} cells of {protocol.get('search_steps')} nodes; this "
            f"search has {config.dataset} cells of {config.steps} nodes, so its cell cannot be "
            f"placed there (search without --retrain, or on the table's data)")
    tables.check_protocol(table, tables.spec("pc-darts", name, device))
    return table, name


def retrain_sentence(summary: dict) -> str:
    """The one line a learner reads at the end of ``search ... --retrain``."""
    return (f"found cell: {summary['retrain_accuracy']:.3f} test accuracy after retraining, "
            f"better than {summary['reference_percentile']:.0f}% of random cells' trainings "
            f"(their median {summary['random_median']:.3f})")


def summarize_run(result: SearchResult) -> dict:
    """What ``summary.json`` holds for a search: seed, k, edge_norm, the genotype, its
    parameter-free ops (normal and reduction cell), the skip_connects of the normal cell at
    every epoch (the collapse monitor), the architecture half's accuracy, the whole config,
    the search's seconds (over every session of a resumed run), torch, the machine's
    fingerprint and date."""
    cfg, h, g = result.config, result.history, result.genotype
    return {"method": cfg.method, "seed": cfg.seed, "k": cfg.k, "edge_norm": cfg.edge_norm,
            "unrolled": cfg.unrolled, "genotype": g.to_dict(),
            "param_free_normal": param_free_count(g, "normal"),
            "param_free_reduce": param_free_count(g, "reduce"),
            "normal_pairs": len(g.normal),
            "skips_per_epoch": [sum(op == "skip_connect" for op, _ in x.normal)
                                for x in h.genotypes()],
            "param_free_per_epoch": [param_free_count(x) for x in h.genotypes()],
            "search_valid_acc": h.valid_acc[-1] if h.valid_acc else None,
            "config": asdict(cfg),
            "search_s": float(sum(h.seconds)),
            "torch": torch.__version__,
            "machine": machine(next(result.network.parameters()).device),
            "created": time.strftime("%Y-%m-%d")}


def cli_search(method="pc-darts", preset=None, k=None, edge_norm=None, unrolled=False,
               epochs=None, dataset=None, seed=None, out=None, resume=None, retrain=False,
               overwrite=False, device="auto") -> dict:
    """``nas-tutorial search pc-darts|darts``: run, then write the genotype, the history,
    ``summary.json``, the cell drawings (SVG) and the alpha/beta figures (HTML) into the
    run folder. ``retrain=True`` then trains the found cell from scratch with the
    ``pc-darts`` table's protocol and places it among the table's random cells
    (``retrain_accuracy``, ``reference_percentile`` in ``summary.json``).

    Everything is checked before any work: the run folder (:mod:`nas_tutorial.runfolders`;
    ``overwrite`` replaces a run in it), with ``resume`` the checkpoint, its method and
    every flag given (it must agree with the saved config), and with ``retrain`` the table."""
    from . import runfolders as rf
    from . import viz
    from .runs import device_label

    if preset is None and resume is None:  # the preset follows the device (cpu: quick)
        preset = preset_name(None, device)
    if resume is not None:
        run_dir = rf.check_resume(resume, method, out, overwrite)
        config_check = load_checkpoint(run_dir)["config"]
        saved = asdict(config_check)
        if saved["method"] != method:
            raise RunFolderError(f"{run_dir} holds a {saved['method']} run, not a {method} "
                                 f"one; resume it with `nas-tutorial search {saved['method']} "
                                 f"--resume {run_dir}`")
        # the fields the flags set; a preset decides every other one
        flag_fields = {"seed", "k", "edge_norm", "unrolled", "epochs", "warmup_epochs",
                       "dataset", "image_size"}
        rf.check_preset(run_dir, preset, saved,
                        {n: asdict(get_config(method, n)) for n in ("quick", "long", "full")},
                        flag_fields)
        rf.check_flags(run_dir, saved, [
            ("--seed", "seed", seed), ("--k", "k", k), ("--no-edge-norm", "edge_norm", edge_norm),
            ("--unrolled", "unrolled", True if unrolled else None), ("--epochs", "epochs", epochs),
            ("--dataset", "dataset", dataset)])
        config = None
    else:
        seed = 0 if seed is None else seed
        overrides = {"seed": seed}
        if k is not None:
            overrides["k"] = k
        if edge_norm is not None:
            overrides["edge_norm"] = edge_norm
        if unrolled:
            overrides["unrolled"] = True
        if epochs is not None:
            overrides["epochs"] = epochs
            overrides["warmup_epochs"] = min(get_config(method, preset).warmup_epochs,
                                             epochs // 2)
        if dataset is not None:
            overrides["dataset"] = dataset
            small = dataset == "digits" or (dataset == "fashion_mnist"
                                            and data_preset(preset) == "quick")
            overrides["image_size"] = 16 if small else None
        config = config_check = get_config(method, preset, **overrides)
        label = preset if preset in LONGER else preset_name(preset)
        run_dir = rf.check_new(out or f"runs/{method}-{label}-seed{seed}", method, overwrite)
    device = resolve_device(device)
    if retrain:
        # The table was trained on a CPU: the found cell is retrained there too, so that it
        # is placed among trainings with the same numerics (no bf16 autocast).
        table, table_name = check_retrain(config_check, preset)
        retrain_device = torch.device("cpu") if "CPU" in table.header.get("device", "CPU") \
            else device
    distributed.barrier()  # every rank has checked the folder before rank 0 changes it
    if resume is None and overwrite and distributed.is_main():  # once every check has passed
        rf.clear(run_dir)
    result = search(config, out=run_dir, resume=resume, device=device)
    h, g = result.history, result.genotype
    if not distributed.is_main():  # rank 0 writes the files and retrains; the others are done
        return {"run_dir": run_dir, "result": str(g), "files": {}, "summary": {}}
    label = preset if preset in LONGER else (preset_name(preset) if resume is None else None)
    summary = {**summarize_run(result), "preset": label, "device": device_label(device),
               "processes": distributed.world_size()}
    # The search's files first: an interrupted or refused retraining loses none of them.
    files = {"genotype": run_dir / "genotype.json", "history": run_dir / "history.json",
             "summary": run_dir / "summary.json"}
    write_json(run_dir / "summary.json", summary, strict=True)
    files["normal"] = viz.save_svg(viz.draw_cell(g, "normal"), run_dir / "normal.svg")
    files["reduce"] = viz.save_svg(viz.draw_cell(g, "reduce"), run_dir / "reduce.svg")
    figures = {"alpha": (viz.plot_alpha_evolution(h, "normal"), "alpha_normal.html"),
               "alpha_r": (viz.plot_alpha_evolution(h, "reduce"), "alpha_reduce.html"),
               "heatmap": (viz.plot_alpha_heatmap(h), "alpha_heatmap.html"),
               "skips": (viz.plot_skip_monitor(h), "skip_monitor.html")}
    for name_, (fig, name) in figures.items():
        files[name_] = viz.save_html(fig, run_dir / name)
    if retrain:
        from . import tables

        print(f"retraining the found cell with the {table_name} table's protocol "
              f"({retrain_device.type}) ...")
        with distributed.alone():  # rank 0 retrains by itself (the others have ended)
            placed = tables.retrain("pc-darts", g.to_dict(), result.config.seed, table_name,
                                    retrain_device, table=table, progress=True)
        summary.update({"retrain_accuracy": placed["accuracy"],
                        "reference_percentile": placed["percentile"],
                        "random_median": placed["random_median"],
                        "retrain_s": placed["seconds"], "retrain_device": retrain_device.type})
        write_json(run_dir / "summary.json", summary, strict=True)
    out = {"run_dir": run_dir, "result": str(g), "files": files, "summary": summary}
    if retrain:
        out["sentence"] = retrain_sentence(summary)
    return out
