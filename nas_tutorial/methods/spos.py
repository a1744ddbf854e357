"""SPOS: Single Path One-Shot NAS with uniform sampling.

Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform Sampling",
ECCV 2020, and the official code (megvii-model/SinglePathOneShot). The space (Sec. 3.1,
3.3, 4: the ShuffleNetV2 supernet, paths, channel scales, the FLOPs table) is
:mod:`nas_tutorial.spos_space`, re-exported here. What is here:

- Sec. 3.2, Eq. (7)/(8): supernet training with a uniformly sampled single path per step;
  by default, as the official ``train.py`` always does, the path is drawn inside the FLOPs
  window around the budget (Sec. 4: one of 7 bins uniformly, then rejection sampling inside
  it, give up after 500 tries); ``sampling="bins"`` draws the 7 bins over the whole space's
  FLOPs range instead, ``sampling="uniform"`` any path uniformly. Only the path's weights
  move. ``space="channels"`` trains and searches block and channel scale per layer.
- Sec. 3.4, Alg. 1: BN recalibration, then evolutionary search under FLOPs/params
  budgets; a random search with the same number of evaluations (Sec. 4, Fig. 5).
- Ranking quality: Kendall tau between inherited and stand-alone accuracy, with and
  without BN recalibration, against the ``spos`` ground-truth table.

Several GPUs or machines (torchrun, :mod:`nas_tutorial.distributed`): the supernet trains
data-parallel; every process draws the same path each step (one ``random.Random`` seeded
with the run seed, touched by nothing else) and the same global batch, keeps its shard, and
the path's gradients are averaged over the processes, so the unsampled blocks have no
gradient on any process and stay untouched. The search after training (BN recalibration,
evolution, random search) runs on rank 0 alone.

Left out: mixed-precision quantization search (Sec. 3.3); spreading the evolution's
fitness evaluations over processes. BN recalibration averages batch statistics exactly
instead of the official momentum 0.1. Figures live in :mod:`nas_tutorial.viz.spos`.
"""
from __future__ import annotations

import itertools
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..data import CHANNELS, CLASSES, DeviceLoader, holdout, load, split
from ..devices import resolve_device
from ..groundtruth import ranking_ceiling  # noqa: F401  (spos.ranking_ceiling, as before)
from ..checkpoints import fingerprint, load_into, read_checkpoint, save, write_json
from ..config import TrainConfig, preset_name, select
from ..training import autocast, diverged, nonfinite, progress_bar, train
from .spos_space import (  # noqa: F401  (the space, as spos.* names)
    CHANNEL_SCALES, CHOICES, CIFAR, GPU, ChoiceBlock, IMAGENET, PUBLISHED_PATH, PathError,
    QUICK, SPACES, Supernet, SupernetConfig, channel_shuffle, check_budget, check_path,
    count_flops, count_params, decode, flops_bins, in_space, lookup_table, path_key,
    random_path, sample_path, space_of, space_range, standalone, within_budget)

SAMPLING = ("window", "bins", "uniform")
FIRST_STEPS = 5  # losses of the first steps kept in the history (see train_supernet)


# -- run settings ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SPOSConfig:
    """Supernet training and search settings (official ``train.py`` / ``search.py``)."""

    name: str
    supernet: SupernetConfig
    dataset: str                   # nas_tutorial.data name
    image_size: int | None         # resize the images to this side (None = native)
    valid_fraction: float          # training images held out for fitness (official: 50k)
    epochs: int                    # supernet epochs (official: 150k steps of 1024)
    batch_size: int                # images per step
    lr: float                      # SGD lr, decayed linearly to 0 per step (official 0.5@1024)
    momentum: float = 0.9
    weight_decay: float = 4e-5     # on weights with more than one dimension only
    label_smoothing: float = 0.1   # official ImageNet setting
    sampling: str = "window"       # "window": a FLOPs bin around the budget, then a path in it,
    #                                as the official train.py trains (no budget: bins over the
    #                                whole space); "bins": 7 bins over the whole space's
    #                                FLOPs range; "uniform": any path, uniformly
    amp: bool = True               # bf16 autocast on CUDA
    recal_batches: int = 200       # BN recalibration batches (official 200 of 128)
    recal_batch_size: int = 128
    valid_images: int | None = None  # cap on held-out images per fitness (None = all)
    train_images: int | None = None  # supernet training images (a fixed subset; None = all)
    population: int = 50           # Sec. 3.4 / official search.py
    generations: int = 20
    topk: int = 10                 # parents for mutation and crossover
    n_mutation: int = 25           # children by mutation per generation
    n_crossover: int = 25          # children by crossover per generation
    mutation_prob: float = 0.1     # per-layer re-sampling probability
    flops_limit: float | None = 330.0  # MFLOPs (official 330M at 224x224)
    params_limit: float | None = None  # millions of weights
    ranking_paths: int = 10        # paths trained stand-alone for Kendall tau
    ranking_epochs: int = 10       # epochs of a path trained stand-alone (ranking, table)
    seed: int = 0
    space: str = "blocks"          # SPACES: blocks, or blocks and channel scales (Sec. 3.3)

    def __post_init__(self):
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLING)}, "
                             f"got {self.sampling!r}")
        # the space decides the channel scales (in_space), the data the input and output sizes
        net = in_space(self.supernet, self.space)
        object.__setattr__(self, "supernet", replace(
            net, in_channels=CHANNELS.get(self.dataset, net.in_channels),
            num_classes=CLASSES.get(self.dataset, net.num_classes)))
        for name in ("flops_limit", "params_limit"):  # before any training, not after it
            limit = getattr(self, name)
            if limit is not None and not 0 < limit < math.inf:  # NaN fails it too
                raise ValueError(f"{name} must be a positive finite number of millions "
                                 f"(or None), got {limit!r}")


# What decides a supernet's weights; the search settings (population, recalibration, ...) do
# not, so a trained supernet serves any search over it.
TRAINING_FIELDS = ("supernet", "dataset", "image_size", "valid_fraction", "train_images",
                   "epochs", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing",
                   "sampling", "flops_limit", "amp", "seed")


def training_settings(config: dict) -> dict:
    """The part of a config (as ``asdict``) that decides the supernet's weights; the FLOPs
    limit only when training samples the window around it."""
    out = {k: config[k] for k in TRAINING_FIELDS if k in config}
    if config.get("sampling") != "window":
        out.pop("flops_limit", None)
    return out


PRESETS = {
    # 6 layers (4,096 paths) on 16x16 Fashion-MNIST, 6,000 training images, 10,000 held out (a
    # sixth of the set; fitness reads the first 2,000). The supernet trains 40 epochs (3,720 steps,
    # about 4 minutes on one CPU core), chosen by measurement (benchmarks/spos_supernet_sweep.py,
    # data/runs/spos-quick-supernet-sweep.json, supernet seeds 0-2): after 6 / 20 / 40 epochs the
    # training accuracy over the sampled paths is 0.46 / 0.65 / 0.70 and the best path's inherited
    # held-out accuracy 0.59 / 0.72 / 0.75 (paths trained stand-alone: 0.80), still rising at 20;
    # evolution >= random search on one fitness cache in 13 / 12 / 13 of 15 (supernet, search seed)
    # pairs; Kendall tau against the spos table stays near 0 at every length (the table cannot rank
    # these paths: ranking_ceiling). Notebook 04 loads the supernet ``search spos`` wrote instead
    # of training it (:func:`nas_tutorial.run.records.load_supernet`). A path trained stand-alone
    # (the spos table) gets the supernet's optimizer for ``ranking_epochs`` = 8 epochs, cosine to
    # zero, and is scored on all 10,000 held-out images: measured on one path, held-out accuracy
    # 0.69 / 0.76 / 0.80 after epochs 1 / 5 / 8 (flat over the last two); seeds 0 and 1 end 0.006
    # apart.
    "quick": SPOSConfig(
        name="quick", supernet=QUICK, dataset="fashion_mnist", image_size=16,
        valid_fraction=1 / 6, train_images=6000, epochs=40, batch_size=64, lr=0.1,
        recal_batches=2, recal_batch_size=128, valid_images=2000, population=12,
        generations=5, topk=4, n_mutation=6, n_crossover=6, flops_limit=0.68,
        ranking_paths=4, ranking_epochs=8),
    # A GPU run on CIFAR-10: the paper's 20-layer supernet with a stride-1 stem; lr scaled
    # linearly from 0.5 at batch 1024; the budget at the paper's place in the FLOPs range.
    "full": SPOSConfig(
        name="full", supernet=CIFAR, dataset="cifar10", image_size=None, valid_fraction=0.1,
        epochs=120, batch_size=256, lr=0.125, valid_images=None, flops_limit=27.0,
        ranking_paths=10, ranking_epochs=30),
    # A notebook on one GPU (run.gpu_budget): lr scaled as in full, the budget near where 330M
    # sits in ImageNet's FLOPs range (0.47 of it; 6.7M: 0.44 on CIFAR-10, 0.56 on grey images).
    "gpu": SPOSConfig(
        name="gpu", supernet=GPU, dataset="cifar10", image_size=32, valid_fraction=0.1,
        train_images=20000, epochs=20, batch_size=256, lr=0.125, recal_batches=4,
        recal_batch_size=256, valid_images=2000, population=16, generations=6, topk=5,
        n_mutation=8, n_crossover=8, flops_limit=6.7, ranking_paths=8, ranking_epochs=5),
}


def get_config(preset: str | None = None, **overrides) -> SPOSConfig:
    """The SPOS settings of the preset ``nt.get_preset`` would choose, with overrides."""
    return select(PRESETS, preset_name(preset), overrides)


def load_data(cfg: SPOSConfig, device="auto", cap: bool = True):
    """(supernet-train, held-out) splits of the training set, on ``device``; ``cap=False``
    keeps every held-out image (the ground-truth table), else ``cfg.valid_images``."""
    ds = load(cfg.dataset, train=True, size=cfg.image_size, device=resolve_device(device))
    if ds.shape != (cfg.supernet.in_channels, cfg.supernet.image_size, cfg.supernet.image_size):
        raise ValueError(f"{cfg.dataset} images are {ds.shape}, the supernet expects "
                         f"{cfg.supernet.in_channels}x{cfg.supernet.image_size}^2")
    if cfg.train_images is not None:  # exact counts from a large set (Fashion-MNIST's 60k)
        train_ds, valid_ds = holdout(ds, round(len(ds) * cfg.valid_fraction), cfg.train_images)
    else:
        train_ds, valid_ds = split(ds, 1 - cfg.valid_fraction, seed=0)
    if cap and cfg.valid_images is not None:
        valid_ds = valid_ds.subset(slice(0, cfg.valid_images))
    return train_ds, valid_ds



# -- supernet training (Sec. 3.2) -------------------------------------------------------------
def make_optimizer(supernet: nn.Module, cfg: SPOSConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay on weights with more than one dimension only
    (official ``get_parameters``: no decay on BN and biases)."""
    decay = [p for p in supernet.parameters() if p.ndim > 1]
    no_decay = [p for p in supernet.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=cfg.lr, momentum=cfg.momentum)


def train_step(supernet, optimizer, x, y, path, cfg: SPOSConfig):
    """One step on one path (Eq. 8). Grads are set to None, not zero: blocks off the path
    get no gradient, and SGD then skips them, momentum and weight decay included. Under
    torchrun ``x, y`` is this process's shard and the path's gradients are averaged over the
    processes (every process trains the same path, so the same parameters have one)."""
    with autocast(x.device, cfg.amp):
        logits = supernet(x, path)  # (B, num_classes)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    distributed.all_reduce_grads(supernet.parameters())
    optimizer.step()
    return loss, logits


def train_supernet(supernet: Supernet, train_ds, cfg: SPOSConfig, device="auto",
                   checkpoint=None, progress=True, callback=None) -> dict:
    """Train ``supernet`` by single-path sampling; returns the per-epoch history.

    Each step samples one path (``cfg.sampling``: by default one of 7 FLOPs bins around the
    budget uniformly, then a uniform path inside it) and back-propagates through it alone:
    unsampled blocks are not in the graph, their ``.grad`` stays None, and
    ``torch.optim.SGD`` skips parameters without a gradient, so neither momentum nor weight
    decay moves them. The official ``train.py`` gets the same effect another way: it sets
    ``p.grad = None`` for every parameter whose gradient sums to zero before its SGD step.
    ``checkpoint`` (a file) is written after every epoch and resumed from when it exists;
    once training is finished it keeps only the weights, the history and the settings (the
    optimizer state is of no further use), which is what :func:`nas_tutorial.run.records.load_supernet` reads.
    A NaN/Inf in the loss or the weights (checked once per epoch, from a flag kept on the
    device) raises :class:`~nas_tutorial.training.Diverged` before that epoch's checkpoint
    is written: the previous one stays, and no search runs on a broken supernet.
    """
    device = resolve_device(device)
    cuda = device.type == "cuda"
    distributed.check_batch(cfg.batch_size)
    main = distributed.is_main()  # only rank 0 writes the checkpoint and shows the bar
    supernet.to(device)
    distributed.broadcast_parameters(supernet)  # every rank starts from rank 0's weights
    if cuda:
        supernet.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(supernet, cfg)
    loader = DeviceLoader(train_ds.to(device), cfg.batch_size, train=True, seed=cfg.seed,
                          channels_last=cuda)
    total = cfg.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / total)
    rng = random.Random(cfg.seed)  # the paths: the same on every rank
    torch.manual_seed(distributed.rank_seed(cfg.seed))  # dropout: each rank its own masks
    history = {"epoch": [], "train_loss": [], "train_acc": [], "seconds": [], "first_losses": []}
    start = 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        # On the CPU: RNG states must be CPU tensors; load_state_dict moves the rest.
        state = read_checkpoint(checkpoint, "spos")
        if training_settings(state["config"]) != training_settings(asdict(cfg)):
            raise ValueError(f"{checkpoint} was trained with other settings; use a new folder")
        load_into(supernet, state["model"], checkpoint)
        history, start = state["history"], state["epoch"]
        if start < cfg.epochs:
            distributed.check_world(state.get("world_size"), checkpoint)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            loader.load_state_dict(state["loader"])
            rng.setstate(state["rng"])
            # every rank its own dropout generators (one process: rank 0's, as before)
            mine = state.get("rngs", [(state["torch_rng"], state.get("cuda_rng"))])[
                distributed.rank()]
            torch.set_rng_state(mine[0])
            if cuda and mine[1] is not None:  # dropout draws on the device
                torch.cuda.set_rng_state(mine[1], device)
    bar = progress_bar(total, "supernet", progress and main)
    bar.update(start * len(loader))
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        supernet.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        finite = torch.ones((), device=device, dtype=torch.bool)
        first = []
        for x, y in loader:
            # the same path on every rank: rng is seeded alike and used for nothing else
            path = sample_path(cfg.supernet, rng, cfg.sampling != "uniform", flops_limit=
                               cfg.flops_limit if cfg.sampling == "window" else None)
            x, y = distributed.shard(x, y)  # this rank's rows of the global batch
            loss, logits = train_step(supernet, optimizer, x, y, path, cfg)
            scheduler.step()
            loss_sum += loss.detach().float() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            finite &= torch.isfinite(loss.detach())  # on the device: no sync per step
            if epoch == 0 and len(first) < FIRST_STEPS:
                first.append(loss.detach().float())
            bar.update(1)
        if distributed.active():  # the global batch's numbers, in one collective
            distributed.average_buffers(supernet)
            loss_sum, correct, flag = distributed.all_reduce_sum(loss_sum, correct,
                                                                 (~finite).long())
            finite = flag == 0
            first = distributed.all_reduce_mean(first)  # each the global batch's mean loss
        bad = nonfinite(finite, supernet)  # read with the epoch's loss and accuracy
        if bad is not None:
            bar.close()
            kept = (f"epoch {epoch}, {checkpoint}" if checkpoint is not None and epoch > 0
                    else None)
            raise diverged("supernet training", epoch + 1, bad, kept,
                           hint=f"a lower lr than {cfg.lr:g}")
        if first:
            # The losses of the first steps name a training run (init, data order, paths,
            # lr): measured, one and two CPU threads agree to 1e-6 over the first six steps,
            # then drift apart chaotically (0.05 in the first epoch's mean loss).
            history["first_losses"] = torch.stack(first).tolist()
        seen = len(loader) * loader.batch_size
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(loss_sum.item() / seen)  # one sync per epoch
        history["train_acc"].append(correct.item() / seen)
        history["seconds"].append(time.perf_counter() - t0)
        bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}",
                        acc=f"{history['train_acc'][-1]:.3f}")
        # the dropout generators of every rank, for an exact resume (one collective)
        rngs = distributed.gather_object(
            (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)
        ) if checkpoint is not None else None
        if checkpoint is not None and main:
            state = {"model": supernet.state_dict(), "history": history, "epoch": epoch + 1,
                     "config": asdict(cfg)}
            if epoch + 1 < cfg.epochs:  # a finished supernet serves any number of processes
                state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                             world_size=distributed.world_size(),
                             loader=loader.state_dict(), rng=rng.getstate(),
                             torch_rng=torch.get_rng_state(), rngs=rngs,
                             cuda_rng=torch.cuda.get_rng_state(device) if cuda else None)
            save(state, checkpoint)
        if callback is not None:
            callback(history)
    bar.close()
    supernet.eval()
    return history


# -- BN recalibration and fitness (Sec. 3.4) ----------------------------------------------------
@torch.no_grad()
def recalibrate_bn(model: nn.Module, path, batches) -> None:
    """Reset the path's BN running statistics and re-estimate them with forward
    passes in train mode. During training the running statistics averaged over all sampled
    paths; one path's features have statistics of their own. Momentum
    1/(k+1) at batch k makes the running values the exact mean over the batches.
    ``path=None``: any model called as ``model(x)``, every BatchNorm recalibrated (the
    exercise of notebook 04 checks against this)."""
    bns = model.path_bns(path) if path is not None and hasattr(model, "path_bns") else [
        m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
    model.train()
    try:
        for k, x in enumerate(batches):
            for m in bns:
                m.momentum = 1.0 / (k + 1)
            model(x) if path is None else model(x, path)
    finally:  # an interrupt must not leave the momenta or train mode behind
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()


class PathEvaluator:
    """Fitness of a path: accuracy on the held-out images with weights inherited from the
    supernet, after BN recalibration (``recalibrate=False`` keeps the statistics the
    supernet had after training). The batches are drawn once and live on the device;
    fitness is cached per path, so a widget can re-run a search cheaply."""

    def __init__(self, supernet: Supernet, train_ds, valid_ds, recal_batches: int = 200,
                 recal_batch_size: int = 128, recalibrate: bool = True, amp: bool = True,
                 seed: int = 0):
        self.model = supernet.eval()
        self.device = next(supernet.parameters()).device
        self.recalibrate, self.amp = recalibrate, amp
        cl = self.device.type == "cuda"
        # The same fixed batches recalibrate every path (drawn once, with ``seed``): two
        # paths' fitnesses then differ by what the paths are, not by which images happened
        # to set their statistics, and a path's fitness is a deterministic function of the
        # path, which is what lets the cache (and evolution vs random on it) be fair.
        loader = DeviceLoader(train_ds.to(self.device), recal_batch_size, train=True,
                              seed=seed, channels_last=cl)
        self.recal = []
        while len(self.recal) < recal_batches:  # epochs of the loader, as many as needed
            self.recal += [x for x, _ in itertools.islice(loader, recal_batches - len(self.recal))]
        self.valid = list(DeviceLoader(valid_ds.to(self.device), 1024, train=False,
                                       channels_last=cl))
        self.n_valid = len(valid_ds)
        self.trained_bn = {k: v.clone() for k, v in supernet.state_dict().items()
                           if "running" in k or "num_batches" in k}
        self.settings = {"supernet": fingerprint(supernet), "recal_batches": recal_batches,
                         "recal_batch_size": recal_batch_size, "valid_images": self.n_valid,
                         "amp": amp and self.device.type == "cuda", "seed": seed,
                         "recalibrate": recalibrate}
        self.cache = {}

    def save_cache(self, path) -> Path:
        """Write the fitness cache with the settings that produced it (JSON)."""
        return write_json(path, {"settings": self.settings, "paths": [list(p) for p in self.cache],
                                 "fitness": list(self.cache.values())})

    def load_cache(self, path) -> int:
        """Add the fitnesses of a cache file written by :meth:`save_cache` for this very
        supernet and these settings (else nothing: a stale cache is never used); returns how
        many were added."""
        path = Path(path)
        if not path.is_file():
            return 0
        d = json.loads(path.read_text())
        if d.get("settings") != self.settings:
            return 0
        before = len(self.cache)
        self.cache.update({tuple(p): f for p, f in zip(d["paths"], d["fitness"])})
        return len(self.cache) - before

    @torch.no_grad()
    def accuracy(self, path, recalibrate: bool | None = None) -> float:
        path = check_path(path, self.model.config)
        recalibrate = self.recalibrate if recalibrate is None else recalibrate
        try:
            if recalibrate:
                with autocast(self.device, self.amp):
                    recalibrate_bn(self.model, path, self.recal)
            else:
                self.model.load_state_dict(self.trained_bn, strict=False)
            self.model.eval()
            correct = torch.zeros((), device=self.device, dtype=torch.long)
            for x, y in self.valid:
                with autocast(self.device, self.amp):
                    correct += (self.model(x, path).argmax(1) == y).sum()
            return correct.item() / self.n_valid  # one sync per path
        finally:  # leave the supernet as trained (for the next evaluator), even on Ctrl-C
            self.model.load_state_dict(self.trained_bn, strict=False)

    def __call__(self, path) -> float:
        path = tuple(path)
        if path not in self.cache:
            self.cache[path] = self.accuracy(path)
        return self.cache[path]


# -- evolutionary and random search (Sec. 3.4, Alg. 1) -----------------------------------------
@dataclass
class SearchResult:
    """Every evaluated path, in order: dicts with path, fitness, flops, params (raw counts),
    generation and origin (random / mutation / crossover)."""

    method: str
    evaluated: list = field(default_factory=list)

    @property
    def best(self) -> dict:
        return min(self.evaluated, key=_rank_key)

    def best_per_generation(self) -> list:
        """(evaluations so far, best fitness so far) at the end of each generation."""
        out, best, n = [], -math.inf, 0
        for g in sorted({e["generation"] for e in self.evaluated}):
            gen = [e["fitness"] for e in self.evaluated if e["generation"] == g]
            n, best = n + len(gen), max([best] + gen)
            out.append((n, best))
        return out

    def to_dict(self) -> dict:
        return {"method": self.method, "evaluated": self.evaluated}

    def __repr__(self) -> str:
        if not self.evaluated:
            return f"SearchResult({self.method}, empty)"
        b = self.best
        return (f"SearchResult({self.method}, {len(self.evaluated)} paths, best {tuple(b['path'])}"
                f" fitness {b['fitness']:.4f}, {b['flops'] / 1e6:.3f}M FLOPs)")


def _rank_key(e):  # higher fitness first; ties to the cheaper path, then by path (stable)
    return (-e["fitness"], e["flops"], tuple(e["path"]))


def mutate(parents, n, prob, config, rng, legal) -> list:
    """Up to ``n`` children: a random parent with each layer re-sampled with probability
    ``prob``; ``legal(path)`` rejects duplicates and over-budget paths (official
    ``get_mutation``: at most 10n tries)."""
    out = []
    for _ in range(10 * n):
        if len(out) == n or not parents:
            break
        parent = rng.choice(parents)
        child = tuple(rng.randrange(config.num_choices) if rng.random() < prob else c
                      for c in parent)
        if legal(child):
            out.append(child)
    return out


def crossover(parents, n, config, rng, legal) -> list:
    """Up to ``n`` children, each gene from one of two random parents (``get_crossover``)."""
    out = []
    for _ in range(10 * n):
        if len(out) == n or not parents:
            break
        a, b = rng.choice(parents), rng.choice(parents)
        child = tuple(rng.choice((x, y)) for x, y in zip(a, b))
        if legal(child):
            out.append(child)
    return out


def random_fill(n, config, rng, legal, tries_per_path: int = 100) -> list:
    """Up to ``n`` random legal paths (``get_random``), giving up after 100 tries each."""
    out = []
    for _ in range(tries_per_path * n):
        if len(out) == n:
            break
        child = random_path(config, rng)
        if legal(child):
            out.append(child)
    return out


def _search(method, propose, evaluate, config, generations, flops_limit, params_limit, seed,
            settings, checkpoint, progress, callback) -> SearchResult:
    """The loop both searches share: propose a generation, evaluate it, checkpoint."""
    check_budget(config, flops_limit, params_limit)
    rng = random.Random(seed)
    result, start = SearchResult(method), 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    settings = {"method": method, "config": asdict(config), "flops_limit": flops_limit,
                "params_limit": params_limit, "seed": seed, **settings}
    settings = json.loads(json.dumps(settings))  # tuples as lists, as read back from disk
    if checkpoint is not None and checkpoint.exists():
        state = json.loads(checkpoint.read_text())
        if state["settings"] != settings:
            raise ValueError(f"{checkpoint} was written with other settings; use a new folder")
        result.evaluated, start = state["evaluated"], state["generation"]
        v, s, g = state["rng"]
        rng.setstate((v, tuple(s), g))
    seen = {tuple(e["path"]) for e in result.evaluated}

    def legal(path):
        if path in seen or not within_budget(path, config, flops_limit, params_limit):
            return False
        seen.add(path)  # a child proposed twice in one generation is a duplicate too
        return True

    bar = progress_bar(generations, method, progress)
    bar.update(start)
    for gen in range(start, generations):
        top = [tuple(e["path"]) for e in sorted(result.evaluated, key=_rank_key)]
        for path, origin in propose(gen, top, rng, legal):
            result.evaluated.append({"path": list(path), "fitness": evaluate(path),
                                     "flops": count_flops(path, config),
                                     "params": count_params(path, config),
                                     "generation": gen, "origin": origin})
        if checkpoint is not None:
            write_json(checkpoint, {"settings": settings, "generation": gen + 1,
                                    "evaluated": result.evaluated,
                                    "rng": list(rng.getstate())})
        if result.evaluated:
            bar.set_postfix(best=f"{result.best['fitness']:.4f}", n=len(result.evaluated))
        bar.update(1)
        if callback is not None:
            callback(gen, result)
    bar.close()
    return result


def evolution_search(evaluate, config: SupernetConfig, population=50, generations=20,
                     topk=10, n_mutation=25, n_crossover=25, mutation_prob=0.1,
                     flops_limit=None, params_limit=None, seed=0, checkpoint=None,
                     progress=True, callback=None) -> SearchResult:
    """Alg. 1 / official ``search.py``: a random first population; then per generation
    ``n_mutation`` children by mutation and ``n_crossover`` by crossover of the top-k paths
    evaluated so far, filled to ``population`` with random paths. Duplicates and paths over
    the budgets (MFLOPs, millions of params) are rejected. ``evaluate(path) -> fitness``."""
    def propose(gen, ranked, rng, legal):
        kids = []
        if gen > 0:
            top = ranked[:topk]
            kids += [(p, "mutation") for p in mutate(top, n_mutation, mutation_prob, config,
                                                     rng, legal)]
            kids += [(p, "crossover") for p in crossover(top, n_crossover, config, rng, legal)]
        return kids + [(p, "random") for p in random_fill(population - len(kids), config,
                                                          rng, legal)]

    settings = dict(population=population, topk=topk, n_mutation=n_mutation,
                    n_crossover=n_crossover, mutation_prob=mutation_prob, generations=generations)
    return _search("evolution", propose, evaluate, config, generations, flops_limit,
                   params_limit, seed, settings, checkpoint, progress, callback)


def random_search(evaluate, config: SupernetConfig, sizes, flops_limit=None, params_limit=None,
                  seed=0, checkpoint=None, progress=True, callback=None) -> SearchResult:
    """The paper's baseline: ``sizes[g]`` new random legal paths in "generation" g, so it
    evaluates as many paths as the evolution it is compared with (pass the evolution's
    per-generation counts, see :func:`generation_sizes`)."""
    sizes = [int(s) for s in ([sizes] if isinstance(sizes, int) else sizes)]

    def propose(gen, ranked, rng, legal):
        return [(p, "random") for p in random_fill(sizes[gen], config, rng, legal)]

    return _search("random", propose, evaluate, config, len(sizes), flops_limit, params_limit,
                   seed, {"sizes": sizes}, checkpoint, progress, callback)


def generation_sizes(result: SearchResult) -> list:
    """Paths evaluated per generation, for an equal-budget :func:`random_search`."""
    gens = [e["generation"] for e in result.evaluated]
    return [gens.count(g) for g in range(max(gens) + 1)] if gens else []


# -- ranking quality (Sec. 4.2) ----------------------------------------------------------------
def standalone_config(cfg: SPOSConfig, seed: int = 0):
    """How a path is trained stand-alone (ranking quality and the ``spos`` ground-truth
    table): the supernet's optimizer settings for ``cfg.ranking_epochs`` epochs, cosine."""
    return TrainConfig(epochs=cfg.ranking_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                       momentum=cfg.momentum, weight_decay=cfg.weight_decay, drop_path=0.0,
                       cutout=0, label_smoothing=cfg.label_smoothing, seed=seed, amp=cfg.amp)


def ranking_quality(evaluator: PathEvaluator, paths, train_ds, valid_ds, cfg: SPOSConfig,
                    device="auto", progress=True) -> dict:
    """Train each path stand-alone for ``cfg.ranking_epochs`` and compare with its inherited
    fitness: Kendall tau (scipy) of the two accuracy lists."""
    from scipy.stats import kendalltau

    tc = standalone_config(cfg, cfg.seed)
    inherited, alone = [], []
    for path in paths:
        inherited.append(evaluator(path))
        torch.manual_seed(cfg.seed)
        net = Supernet(cfg.supernet, path)
        hist = train(net, train_ds, tc, valid=valid_ds, device=device, progress=progress)
        alone.append(hist.valid_acc[-1])
    tau, p = kendalltau(inherited, alone)
    return {"paths": [list(p_) for p_ in paths], "inherited": inherited, "standalone": alone,
            "tau": float(tau), "p_value": float(p)}


def ranking_from_table(evaluator: PathEvaluator, table) -> dict:
    """Ranking quality against the ``spos`` ground-truth table (``nas_tutorial.tables``):
    the inherited fitness of every path in the table vs its stand-alone accuracy (the mean
    over the table's seeds), Kendall tau and its p-value (scipy) as in
    :func:`ranking_quality`, no training. The same with the supernet's training-time BN
    statistics (``*_no_recal``), and the share of paths recalibration improves."""
    from scipy.stats import kendalltau

    paths = [tuple(r["arch"]) for r in table.rows]
    off = [evaluator.accuracy(p, recalibrate=False) for p in paths]
    inherited = [evaluator(p) for p in paths]
    alone = [table.accuracy(r["key"]) for r in table.rows]
    tau, p = kendalltau(inherited, alone)
    tau_off, p_off = kendalltau(off, alone)
    return {"paths": [list(p_) for p_ in paths], "inherited": inherited, "standalone": alone,
            "tau": float(tau), "p_value": float(p), "inherited_no_recal": off,
            "tau_no_recal": float(tau_off), "p_value_no_recal": float(p_off),
            "improved": sum(a > b for a, b in zip(inherited, off)) / len(paths)}


# -- evolution vs random, several seeds on one supernet ----------------------------------------
def search_pair(evaluator, cfg: SPOSConfig, seed: int, checkpoints=None, progress=True):
    """Evolution with ``cfg``'s settings and a random search with as many evaluations per
    generation, both with search seed ``seed`` on ``evaluator`` (so on its shared cache)."""
    ck = checkpoints or (None, None)
    kw = dict(flops_limit=cfg.flops_limit, params_limit=cfg.params_limit, seed=seed,
              progress=progress)
    evo = evolution_search(evaluator, cfg.supernet, cfg.population, cfg.generations, cfg.topk,
                           cfg.n_mutation, cfg.n_crossover, cfg.mutation_prob,
                           checkpoint=ck[0], **kw)
    rnd = random_search(evaluator, cfg.supernet, generation_sizes(evo), checkpoint=ck[1], **kw)
    return evo, rnd


def search_study(evaluator, cfg: SPOSConfig, seeds=(0, 1, 2, 3, 4), progress=True) -> list:
    """:func:`search_pair` for each search seed: [{seed, evolution, random}]. Every seed
    reads the one fitness cache, so the comparison is of the searches alone."""
    bar = progress_bar(len(seeds), "search seeds", progress)
    out = []
    for s in seeds:
        evo, rnd = search_pair(evaluator, cfg, s, progress=False)
        out.append({"seed": s, "evolution": evo, "random": rnd})
        bar.set_postfix(evolution=f"{evo.best['fitness']:.3f}", random=f"{rnd.best['fitness']:.3f}")
        bar.update(1)
    bar.close()
    return out


def study_summary(study: list) -> dict:
    """Best fitness per seed for both searches, their means, and in how many seeds
    evolution found at least as good a path as random search."""
    evo = [r["evolution"].best["fitness"] for r in study]
    rnd = [r["random"].best["fitness"] for r in study]
    return {"seeds": [r["seed"] for r in study], "evolution": evo, "random": rnd,
            "evolution_mean": sum(evo) / len(evo), "random_mean": sum(rnd) / len(rnd),
            "evolution_at_least_random": sum(a >= b for a, b in zip(evo, rnd)),
            "evaluations": [len(r["evolution"].evaluated) for r in study]}
