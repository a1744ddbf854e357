"""The three methods side by side: same data, same seed, same retraining budget.

What the comparison does (issue 6; each method's own module cites its paper):

- **search** with PC-DARTS (Xu et al., ICLR 2020; ``pc_darts``), SPOS (Guo et al., ECCV
  2020; ``spos``: supernet training, then evolution) and PNAS (Liu et al., ECCV 2018;
  ``pnas``: progressive search with a surrogate), each on the preset's dataset and seed;
- a **random baseline** for each at equal budget, as the papers do: PNAS trains as many
  random cells as it trained children (PNAS Sec. 5.3); SPOS runs random search on the same
  supernet with as many evaluated paths as evolution (SPOS Sec. 4, Fig. 3); for PC-DARTS a
  genotype drawn uniformly from the same DARTS space (the "random search baseline" of DARTS
  Sec. 3.3 / Table 1, one sample here, not the best of 24);
- **retraining** every found architecture (and every baseline) from scratch with one
  :class:`~nas_tutorial.config.TrainConfig`, so accuracy differences come from the
  architecture alone: DARTS/PNAS cells in :class:`~nas_tutorial.network.NetworkCIFAR`, the
  SPOS path as its stand-alone network ``spos.Supernet(config, path)``;
- one **table** (rows of plain dicts): search wall time, device, cost in each method's unit,
  peak memory, params, FLOPs (multiply-adds, ``nt.count_flops``) and test accuracy;
- a **seed study** of PC-DARTS with and without edge normalization (PC-DARTS Sec. 3.3 and
  Sec. 4.4 claim it makes the search more stable): how many edges and ops of the derived
  genotypes agree between seeds (:func:`genotype_agreement`), and the spread of accuracies.

With a run folder (``compare(config, out=folder)``) every search checkpoints into it and the
table is written row by row (atomic writes), so an interrupted comparison resumes there.

On the quick preset the comparison notebook puts each method against its random baseline
through the ground-truth tables instead (``nas_tutorial.tables``), over several seeds: a
found PC-DARTS cell is placed among the table's random cells, and against the best of N of
them at an equal budget (:func:`best_of_n`, :func:`equal_budget_draws`,
:func:`plot_placement`); recorded seed studies are summarized like live ones
(:func:`summarize_seed_study`); :func:`plot_gaps` sets the three methods' gaps side by side.

Left out: retraining with several seeds per architecture (the papers report mean +- std of
several trainings); the ImageNet-shaped runs; the cost of the random PC-DARTS sample is
reported as zero search epochs, since drawing it costs nothing.
"""
from __future__ import annotations

import ctypes
import itertools
import json
import os
import random
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..methods import pc_darts, pnas, spos
from ..checkpoints import write_json
from ..config import TrainConfig, get_preset, preset_name
from ..data import load, resolve_device
from ..flops import count_flops
from ..genotypes import Genotype
from ..network import NetworkCIFAR, count_params
from ..ops import DARTS_OPS
from .records import device_label, load_runs
from .records import record as _record
from ..progress import progress_bar
from ..training import evaluate, train
from ..viz.compare import (plot_gaps, plot_intervals, plot_seed_study,  # noqa: F401
                           plot_table)  # cmp.plot_*, as before
from ..viz.compare import plot_placement as _plot_placement

COLUMNS = ("method", "architecture", "device", "search_s", "cost", "cost_unit", "evaluated",
           "peak_mem_mb", "params", "flops", "accuracy")


# -- configuration -----------------------------------------------------------------------
@dataclass(frozen=True)
class CompareConfig:
    """Settings of one comparison: each method's own config and one retraining budget."""

    preset: str                         # quick | full: names the data and network shape
    seed: int                           # the same seed for every search and retraining
    pc_darts: pc_darts.SearchConfig     # PC-DARTS search (pc_darts.PRESETS)
    spos: spos.SPOSConfig               # supernet + evolution (spos.PRESETS)
    pnas: pnas.PNASConfig               # progressive search (pnas.PNAS_PRESETS)
    retrain: TrainConfig                # one budget for every architecture (config.PRESETS)
    seeds: tuple = (0, 1, 2)            # seed study: PC-DARTS seeds per edge-norm setting


def get_config(preset: str | None = None, seed: int = 0, **overrides) -> CompareConfig:
    """Every method's ``preset`` config (default from ``nt.get_preset()``) with ``seed``,
    retraining with the preset's ``TrainConfig``; ``overrides`` replace whole fields."""
    name = preset_name(preset)
    config = CompareConfig(
        preset=name, seed=seed,
        pc_darts=pc_darts.get_config("pc-darts", name, seed=seed),
        spos=spos.get_config(name, seed=seed),
        pnas=pnas.get_config(name, seed=seed),
        retrain=replace(get_preset(name).train, seed=seed))
    return replace(config, **overrides)


# -- architectures -------------------------------------------------------------------------
def random_genotype(seed: int = 0, steps: int = 4, multiplier: int = 4,
                    primitives=DARTS_OPS) -> Genotype:
    """A genotype drawn uniformly from the DARTS space: per node two distinct inputs among
    the earlier states, each with a random non-``none`` op (the space ``derive_genotype``
    reads out; DARTS Sec. 2.4). Normal and reduction cells are drawn independently."""
    rng = random.Random(seed)
    ops = [op for op in primitives if op != "none"]

    def cell():
        pairs = []
        for i in range(steps):
            for j in sorted(rng.sample(range(2 + i), 2)):
                pairs.append((rng.choice(ops), j))
        return pairs

    concat = list(range(2 + steps - multiplier, 2 + steps))
    return Genotype(cell(), concat, cell(), concat)


def genotype_agreement(a: Genotype, b: Genotype) -> dict:
    """How much two genotypes agree, node by node, in both cells.

    ``edges``: pairs whose input also feeds the same node in ``b`` (multiset match, so a
    node reading input 1 twice agrees once with a node reading it once); ``ops``: pairs
    whose (op, input) is also in that node of ``b``. ``total`` is the number of pairs of the
    larger genotype, so identical genotypes give ``edges == ops == total``.
    """
    edges = ops = total = 0
    for cell in ("normal", "reduce"):
        na, nb = a.nodes(cell), b.nodes(cell)
        total += 2 * max(len(na), len(nb))
        for x, y in zip(na, nb):
            edges += sum((Counter(i for _, i in x) & Counter(i for _, i in y)).values())
            ops += sum((Counter(x) & Counter(y)).values())
    return {"edges": edges, "ops": ops, "total": total,
            "edge_fraction": edges / total, "op_fraction": ops / total}


def describe(arch) -> str:
    """One short line for a genotype (its normal cell) or an SPOS path."""
    if isinstance(arch, Genotype):
        cells = [arch.normal] if arch.normal == arch.reduce else [arch.normal, arch.reduce]
        return " / ".join(" ".join(f"{op}:{i}" for op, i in pairs) for pairs in cells)
    return "path " + "".join(str(c) for c in arch)


# -- measuring -----------------------------------------------------------------------------
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak so far (kB on Linux/BSD)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux 4.0+): then the
    peak is exact, not only as good as the sampling. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _peak_rss_bytes() is not None
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _release_freed_memory() -> None:
    """Hand memory that ``free`` kept back to the OS (glibc only): otherwise a block that
    runs after a bigger one reuses that memory and shows almost no growth."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block, in MB: ``torch.cuda.max_memory_allocated`` on CUDA; on a CPU
    the peak resident set size above the level at entry (after returning freed memory to the
    OS). On Linux the kernel's own peak counter (VmHWM, reset at entry) gives it exactly;
    elsewhere a thread samples the resident size every few milliseconds (tensor ops release
    the GIL, so the sampler keeps running during a step) and can miss a short spike. On a
    CPU it is a rough number: it counts every allocation of the process, the allocator's own
    caching included."""

    def __init__(self, device, interval: float = 0.005):
        self.device, self.interval, self.mb = resolve_device(device), interval, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        _release_freed_memory()
        self._base = self._peak = _rss_bytes()
        self._kernel_peak = _reset_peak_rss()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, _rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
            if self._kernel_peak:
                peak = max(peak, _peak_rss_bytes() or 0)
        self.mb = max(peak - self._base, 0) / 2 ** 20
        return False


@dataclass
class Candidate:
    """An architecture a search (or a baseline) proposed, with what finding it cost."""

    method: str                  # e.g. "PC-DARTS", "SPOS random"
    architecture: object         # a Genotype, or an SPOS path (tuple of ints)
    device: str
    search_s: float              # wall time of the search, seconds
    cost: float                  # search cost in cost_unit
    cost_unit: str               # search epochs | supernet epochs | models trained
    evaluated: int               # architectures scored during the search
    peak_mem_mb: float
    extra: dict = field(default_factory=dict)  # the method's own result object


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    return out, seconds, mem.mb


# -- the three searches and their baselines ------------------------------------------------
def _sub(out, name):
    return None if out is None else Path(out) / name


def run_pc_darts(config: CompareConfig, device="auto", progress=True, out=None) -> list:
    """PC-DARTS search, and a random genotype of the same space. With ``out`` the search
    checkpoints into ``out/pc-darts`` every epoch and resumes from there."""
    device = resolve_device(device)
    cfg = config.pc_darts
    run_dir = _sub(out, "pc-darts")
    resume = run_dir if run_dir is not None and (run_dir / pc_darts.CHECKPOINT).is_file() else None
    res, s, mb = _timed(lambda: pc_darts.search(cfg, out=run_dir, resume=resume, device=device,
                                                progress=progress), device)
    dev = device_label(device)
    rnd = random_genotype(config.seed, cfg.steps, cfg.multiplier)
    return [Candidate("PC-DARTS", res.genotype, dev, s, cfg.epochs, "search epochs", 1, mb,
                      {"result": res}),
            Candidate("PC-DARTS random", rnd, dev, 0.0, 0, "search epochs", 0, 0.0)]


def run_spos(config: CompareConfig, device="auto", progress=True, out=None) -> list:
    """SPOS: train the supernet, then evolution and an equal-budget random search on it.
    Both report the supernet's cost: neither can search without it. With ``out`` all three
    checkpoint into ``out/spos`` and resume from there."""
    device = resolve_device(device)
    cfg = config.spos
    run_dir = _sub(out, "spos")
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    train_ds, valid_ds = spos.load_data(cfg, device)

    def supernet():
        torch.manual_seed(cfg.seed)
        net = spos.Supernet(cfg.supernet)
        spos.train_supernet(net, train_ds, cfg, device, _sub(run_dir, "supernet.pt"),
                            progress=progress)
        return net, spos.PathEvaluator(net, train_ds, valid_ds, cfg.recal_batches,
                                       cfg.recal_batch_size, amp=cfg.amp, seed=cfg.seed)

    (net, evaluator), s_net, mb_net = _timed(supernet, device)
    limits = dict(flops_limit=cfg.flops_limit, params_limit=cfg.params_limit, seed=cfg.seed,
                  progress=progress)
    evo, s_evo, mb_evo = _timed(lambda: spos.evolution_search(
        evaluator, cfg.supernet, cfg.population, cfg.generations, cfg.topk, cfg.n_mutation,
        cfg.n_crossover, cfg.mutation_prob, checkpoint=_sub(run_dir, "evolution.json"),
        **limits), device)
    rnd, s_rnd, mb_rnd = _timed(lambda: spos.random_search(
        evaluator, cfg.supernet, spos.generation_sizes(evo),
        checkpoint=_sub(run_dir, "random.json"), **limits), device)
    dev = device_label(device)
    return [Candidate("SPOS", tuple(evo.best["path"]), dev, s_net + s_evo, cfg.epochs,
                      "supernet epochs", len(evo.evaluated), max(mb_net, mb_evo),
                      {"result": evo}),
            Candidate("SPOS random", tuple(rnd.best["path"]), dev, s_net + s_rnd, cfg.epochs,
                      "supernet epochs", len(rnd.evaluated), max(mb_net, mb_rnd),
                      {"result": rnd})]


def run_pnas(config: CompareConfig, device="auto", progress=True, out=None) -> list:
    """PNAS, then as many random cells trained by the same child trainer (timed apart,
    which is why the search itself runs with ``random_baseline=False``). With ``out`` the
    search checkpoints its trained children into ``out/pnas`` and resumes from there."""
    device = resolve_device(device)
    cfg = replace(config.pnas, random_baseline=False)
    trainer = pnas.ChildTrainer(cfg, device)
    run_dir = _sub(out, "pnas")
    resume = run_dir is not None and (run_dir / "checkpoint.json").is_file()
    res, s, mb = _timed(lambda: pnas.search(cfg, train_fn=trainer, run_dir=run_dir,
                                            resume=resume, device=device,
                                            progress=progress), device)
    n = len(res.records("pnas"))
    cells = pnas.random_cells(n, cfg.blocks, cfg.ops, cfg.seed)
    accs, s_rnd, mb_rnd = _timed(lambda: trainer(cells), device)
    best = max(range(len(cells)), key=lambda k: (accs[k], -k))
    dev = device_label(device)
    # cost = every child the search needed, also those a resumed run read from its checkpoint
    return [Candidate("PNAS", res.best_genotype, dev, s, n, "models trained", n, mb,
                      {"result": res}),
            Candidate("PNAS random", Genotype.from_cell(cells[best]), dev, s_rnd, len(cells),
                      "models trained", len(cells), mb_rnd,
                      {"accuracies": accs, "cells": cells})]


# -- retraining from scratch ---------------------------------------------------------------
def build(candidate: Candidate, config: CompareConfig, num_classes: int, in_channels: int):
    """The evaluation network of a candidate, initialized from the retraining seed."""
    if isinstance(candidate.architecture, Genotype):
        return cell_network(candidate.architecture, config.preset, num_classes, in_channels,
                            config.retrain.seed)
    torch.manual_seed(config.retrain.seed)
    return spos.Supernet(config.spos.supernet, candidate.architecture)


def cell_network(genotype: Genotype, preset: str | None, num_classes: int, in_channels: int,
                 seed: int) -> NetworkCIFAR:
    """The preset's evaluation network (channels, cells, auxiliary head) of a genotype."""
    p = get_preset(preset)
    torch.manual_seed(seed)
    return NetworkCIFAR(genotype, p.channels, num_classes, p.layers, auxiliary=p.auxiliary,
                        in_channels=in_channels)


def retrain(candidate: Candidate, config: CompareConfig, train_ds, test_ds, device="auto",
            progress=True) -> dict:
    """Train the candidate from scratch with ``config.retrain``; the table row."""
    device = resolve_device(device)
    model = build(candidate, config, train_ds.num_classes, train_ds.shape[0])
    params = count_params(model)  # before training moves it; counts are the same anywhere
    flops = count_flops(model, train_ds.shape)
    accuracy = _train_and_test(model, config.retrain, train_ds, test_ds, device, progress)
    return {"method": candidate.method, "architecture": describe(candidate.architecture),
            "device": candidate.device, "search_s": round(candidate.search_s, 2),
            "cost": candidate.cost, "cost_unit": candidate.cost_unit,
            "evaluated": candidate.evaluated, "peak_mem_mb": round(candidate.peak_mem_mb, 1),
            "params": params, "flops": flops, "accuracy": accuracy}


def _train_and_test(model, cfg: TrainConfig, train_ds, test_ds, device, progress) -> float:
    train(model, train_ds, cfg, device=device, progress=progress)
    return evaluate(model, test_ds, device, amp=cfg.amp)[1]


def retrain_data(preset: str | None = None, device="auto"):
    """(train, test) of the preset's dataset on ``device``: the preset's training images
    (``train_images``: a fixed subset, or all), the whole test set for the accuracy (the
    search never saw it)."""
    p = get_preset(preset)
    device = resolve_device(device)
    return (load(p.dataset, train=True, size=p.image_size, device=device, n=p.train_images),
            load(p.dataset, train=False, size=p.image_size, device=device))


def compare(config: CompareConfig | None = None, device="auto", progress=True, out=None):
    """Run the three searches and their baselines, retrain everything; returns
    ``(rows, candidates)``.

    With ``out`` every search checkpoints into a sub-folder and each finished row is added
    to ``out/compare.json`` (atomically): an interrupted comparison run again with the same
    ``out`` resumes the searches and retrains only the rows it is missing, and reaches the
    same architectures and accuracies (wall times then count only the resumed part).
    """
    config = config or get_config(preset_name(None, device))  # cpu: quick, even on a GPU machine
    device = resolve_device(device)
    # loaded first: the one-off cost of reading the data is no method's memory or time
    train_ds, test_ds = retrain_data(config.preset, device)
    candidates = []
    for run in (run_pc_darts, run_spos, run_pnas):
        candidates += run(config, device, progress, out)
    table = Path(out) / "compare.json" if out is not None else None
    done = json.loads(table.read_text())["rows"] if table is not None and table.is_file() else []
    rows = []
    for c in candidates:
        row = next((r for r in done if r["method"] == c.method
                    and r["architecture"] == describe(c.architecture)), None)
        rows.append(row or retrain(c, config, train_ds, test_ds, device, progress))
        if table is not None:
            write_json(table, {"rows": rows})
    return rows, candidates


def format_table(rows, columns=COLUMNS) -> str:
    """The rows as an aligned text table (numbers rounded for reading)."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}" if v < 1 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        s = str(v)
        return s if len(s) <= 28 else s[:25] + "..."

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[k]) for b in body)) for k, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# -- the seed study ------------------------------------------------------------------------
def seed_study(config: pc_darts.SearchConfig, seeds=(0, 1, 2), edge_norm=(True, False),
               retrain: TrainConfig | None = None, preset: str | None = None, device="auto",
               progress=True) -> dict:
    """The PC-DARTS search once per seed, with and without edge normalization.

    Returns ``runs`` (edge_norm, seed, genotype, ``search_accuracy``: the supernet on the
    architecture half at the end, ``accuracy``: after retraining the genotype from scratch
    with ``retrain`` in the ``preset``'s network and testing it, or the search accuracy
    when ``retrain`` is None; seconds), ``pairs`` (:func:`genotype_agreement` of every two
    seeds of one setting) and ``summary`` per setting (mean agreement, accuracy spread).
    """
    device = resolve_device(device)
    data = retrain_data(preset, device) if retrain is not None else None
    runs = []
    for norm in edge_norm:
        for seed in seeds:
            cfg = replace(config, seed=seed, edge_norm=norm)
            t0 = time.perf_counter()
            res = pc_darts.search(cfg, device=device, progress=progress)
            run = {"edge_norm": norm, "seed": seed, "genotype": res.genotype,
                   "search_accuracy": res.history.valid_acc[-1],
                   "accuracy": res.history.valid_acc[-1]}
            if data is not None:
                net = cell_network(res.genotype, preset, data[0].num_classes,
                                   data[0].shape[0], retrain.seed)
                run["accuracy"] = _train_and_test(net, retrain, *data, device, progress)
            runs.append({**run, "seconds": time.perf_counter() - t0})
    return summarize_seed_study(runs)


def summarize_seed_study(runs) -> dict:
    """``pairs`` (:func:`genotype_agreement` of every two seeds of one edge-norm setting)
    and ``summary`` per setting (mean agreement of edges and ops, distinct genotypes, mean,
    SD and range of ``accuracy``) for runs with ``edge_norm``, ``seed``, ``genotype`` (a
    Genotype or its dict) and ``accuracy``: live (:func:`seed_study`) or recorded."""
    from statistics import mean, pstdev

    runs = [{**r, "genotype": r["genotype"] if isinstance(r["genotype"], Genotype)
             else Genotype.from_dict(r["genotype"])} for r in runs]
    pairs, summary = [], {}
    for norm in dict.fromkeys(r["edge_norm"] for r in runs):
        mine = [r for r in runs if r["edge_norm"] == norm]
        these = [{"edge_norm": norm, "seeds": (a["seed"], b["seed"]),
                  **genotype_agreement(a["genotype"], b["genotype"])}
                 for a, b in itertools.combinations(mine, 2)]
        pairs += these
        accs = [r["accuracy"] for r in mine]
        summary[norm] = {
            "edge_agreement": mean(p["edge_fraction"] for p in these) if these else 1.0,
            "op_agreement": mean(p["op_fraction"] for p in these) if these else 1.0,
            "distinct_genotypes": len({r["genotype"] for r in mine}),
            "accuracy_mean": mean(accs), "accuracy_std": pstdev(accs),
            "accuracy_range": max(accs) - min(accs)}
    return {"runs": runs, "pairs": pairs, "summary": summary}


# -- a found cell against the table's random cells ----------------------------------------
def best_of_n(values, n: int, quantiles=(0.05, 0.5, 0.95)) -> dict:
    """The best of ``n`` independent draws from ``values``: its mean and quantiles, exactly.
    Sorted v_1..v_m, the best of n draws (with replacement) is <= v_i with probability
    (i/m)^n. Read off measured trainings this is an optimistic baseline (the best of n
    noisy trainings is picked *and* reported: its own luck counts); :func:`random_search`
    is the honest one."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    order, pmf = _best_of_n_weights(values, n)
    return _summary_of(values[order], pmf, n, quantiles)


def _best_of_n_weights(select, n):
    import numpy as np

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if len(select) == 0:
        raise ValueError("no values to draw from")
    order = np.argsort(select, kind="stable")
    cdf = (np.arange(1, len(order) + 1) / len(order)) ** n
    return order, np.diff(np.concatenate([[0.0], cdf]))  # P(the i-th smallest wins)


def _summary_of(vals, pmf, n, quantiles):
    """Mean and quantiles of a discrete distribution: ``vals`` with probabilities ``pmf``."""
    import numpy as np

    idx = np.argsort(vals, kind="stable")
    v, w = vals[idx], pmf[idx]
    cdf = np.cumsum(w)
    out = {"n": int(n), "mean": float((w * v).sum())}
    for q in quantiles:
        if not 0 < q < 1:
            raise ValueError(f"quantiles must be in (0, 1), got {q}")
        out[f"q{100 * q:g}".replace(".", "_")] = float(v[min(np.searchsorted(cdf, q - 1e-12),
                                                               len(v) - 1)])
    return out


def random_search(table, n: int, group: str = "random", quantiles=(0.05, 0.5, 0.95),
                  report: str = "next") -> dict:
    """Random search with ``n`` cells, scored as a searched cell is: draw ``n`` rows of the
    ``group`` (with replacement), keep the one whose training with one seed is best, and
    report its training with the *other* seed (DARTS Sec. 3.3: random cells are selected
    on one training, then retrained). Exact over the draws, averaged over which seed
    selects; needs a table of at least two seeds. Mean and quantiles of the reported
    accuracy, the baseline a found cell (one training, unselected) is set against.
    ``report="others"``: the mean of every seed but the one that selected, the truth of the
    cell random search picked (the selecting seed left out, as its luck chose the cell)."""
    if report not in ("next", "others"):
        raise ValueError(f"report must be 'next' or 'others', got {report!r}")
    import numpy as np

    rows = [r for r in table.complete() if r["group"] == group]
    held = len(table.seeds)  # an extension under way reads as the table did before it
    acc = np.array([r["accuracy"][:held] for r in rows], dtype=float)  # (rows, seeds)
    if acc.ndim != 2 or acc.shape[1] < 2:
        raise ValueError("random_search needs a table with at least two seeds per row")
    vals, weights = [], []
    seeds = acc.shape[1]
    for sel in range(seeds):  # select on seed `sel`, report the next seed
        order, pmf = _best_of_n_weights(acc[:, sel], n)
        if report == "next":
            vals.append(acc[order, (sel + 1) % seeds])
        else:
            vals.append((acc[order].sum(1) - acc[order, sel]) / (seeds - 1))
        weights.append(pmf / seeds)
    return _summary_of(np.concatenate(vals), np.concatenate(weights), n, quantiles)


def equal_budget_draws(search_s: float, retrain_s: float) -> int:
    """How many random cells the compute of a search and its retraining would train: the
    whole retrainings the search's seconds buy, plus the one the found cell gets."""
    import math

    if not retrain_s > 0 or not search_s >= 0:
        raise ValueError(f"need search_s >= 0 and retrain_s > 0, got {search_s}, {retrain_s}")
    return 1 + math.floor(search_s / retrain_s)


# -- effects over many seeds, judged by the tables' truth ----------------------------------------
def interval(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> dict:
    """The mean of ``values`` (one per search seed) with a percentile bootstrap interval
    over the seeds, and whether the interval holds zero (then the data do not tell the sign
    of the effect). The resampling seed is fixed, so the interval is reproducible."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (resamples, len(v)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"n": int(len(v)), "mean": float(v.mean()), "low": float(lo), "high": float(hi),
            "level": level, "holds_zero": bool(lo <= 0 <= hi)}


def pnas_truth_study(seeds=range(20), config=None, table=None, progress=True) -> dict:
    """PNAS against random search at an equal number of models, over ``seeds`` (chosen
    before looking: 0..19 by default), each search through the table oracle (seed s reads
    one training) and judged by the table's mean over seeds, which no search saw:
    per seed the truth of each one's best cell and their difference, the mean difference
    with its 95% interval, and the MLP ensemble's Spearman against the truth on the
    tabulated cells it had not seen, per level, with its interval."""
    seeds = list(seeds)
    results = pnas.study(config, seeds, table=table, progress=progress)
    rows = []
    for s, r in zip(seeds, results):
        summ = pnas.summary(r)
        rho = r.spearman("random").get(r.config.predictor, {})
        rows.append({"seed": s, "best_truth": summ["best_truth"],
                     "random_best_truth": summ["random_best_truth"],
                     "difference": summ["best_truth"] - summ["random_best_truth"],
                     "spearman_unseen": {str(b): v for b, v in rho.items()}})
    levels = sorted({b for row in rows for b in row["spearman_unseen"]})
    return {"seeds": seeds, "rows": rows,
            "difference": interval([row["difference"] for row in rows]),
            "spearman_unseen": {b: interval([row["spearman_unseen"][b] for row in rows])
                                for b in levels},
            "predictor": results[0].config.predictor, "models": len(results[0].records())}


def spos_truth_study(evaluator, cfg, train_path, seeds=range(20), train_seeds: int = 4,
                     cache=None, table=None, progress=True) -> dict:
    """SPOS evolution against random search at equal evaluations, over ``seeds`` (chosen
    before looking: 0..19), every search on the one shared supernet's fitness cache (the
    paper's setting: train once, search many times), each judged by the truth of its best
    path: the mean held-out accuracy of ``train_seeds`` stand-alone trainings with the
    ``spos`` table's protocol (``train_path(path, seed)``: the table spec's ``train``), which
    no search saw. A path the ``table`` holds is read from
    it; every other pick is trained here, once (the picks of different seeds often agree),
    and kept in the JSON file ``cache`` as it goes, so a stopped study resumes."""
    seeds, cache = list(seeds), Path(cache) if cache is not None else None
    truths = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    pairs = [(s, *spos.search_pair(evaluator, cfg, s, progress=False)) for s in seeds]
    picks = list(dict.fromkeys(tuple(r.best["path"]) for _, *both in pairs for r in both))
    todo = [p for p in picks if spos.path_key(p) not in truths
            and not (table is not None and spos.path_key(p) in table)]
    bar = progress_bar(len(todo) * train_seeds, "stand-alone picks", progress)
    for path in todo:
        truths[spos.path_key(path)] = [round(float(train_path(list(path), k)), 6)
                                       for k in range(train_seeds)]
        bar.update(train_seeds)
        if cache is not None:
            write_json(cache, truths)
    bar.close()

    def truth(path):
        key = spos.path_key(path)
        return table.accuracy(key) if key not in truths else sum(truths[key]) / len(truths[key])

    rows = []
    for s, evo, rnd in pairs:
        e, r = evo.best, rnd.best
        rows.append({"seed": s, "evolution_path": list(e["path"]), "random_path": list(r["path"]),
                     "evolution_fitness": e["fitness"], "random_fitness": r["fitness"],
                     "evolution_flops": e["flops"], "random_flops": r["flops"],
                     "best_truth": truth(e["path"]), "random_best_truth": truth(r["path"]),
                     "difference": truth(e["path"]) - truth(r["path"])})
    return {"seeds": seeds, "rows": rows, "space": cfg.space, "flops_limit": cfg.flops_limit,
            "evaluations": len(pairs[0][1].evaluated), "train_seeds": train_seeds,
            "trainings": {k: v for k, v in truths.items()},
            "difference": interval([row["difference"] for row in rows]),
            "evolution_at_least_random": sum(row["difference"] >= 0 for row in rows)}


# -- recorded runs -------------------------------------------------------------------------
def recorded_rows(kind: str = "compare", root=None) -> list:
    """Rows of recorded comparisons under ``data/runs/`` (newest first), each labelled with
    the device and the date it was recorded; empty when none are recorded."""
    rows = []
    for run in load_runs(kind, root):
        for row in run.get("payload", {}).get("rows", []):
            rows.append({**row, "device": run.get("device", row.get("device")),
                         "recorded": run.get("recorded_at", "?")[:10]})
    return rows


def record(rows, study=None, device="auto", root=None) -> Path:
    """Record a comparison (the table and, if given, the seed-study summary) under
    ``data/runs/`` with device and date; run it after a ``full`` run on a GPU."""

    payload = {"rows": rows}
    if study is not None:
        payload["seed_study"] = {str(k): v for k, v in study["summary"].items()}
    return _record("compare", payload, device=device, root=root)


# -- figures: in nas_tutorial.viz.compare --------------------------------------------------
def plot_placement(table, groups: dict, best_of: int | None = None,
                   title="found cells among the table's random cells"):
    """Where found cells land among the table's random cells
    (:func:`nas_tutorial.viz.compare.plot_placement`), with random search over ``best_of``
    cells at an equal budget (:func:`random_search`) as the baseline when given."""
    baseline = random_search(table, best_of) if best_of else None
    return _plot_placement(table, groups, baseline, title)


__all__ = ["COLUMNS", "CompareConfig", "get_config", "random_genotype", "genotype_agreement",
           "describe", "PeakMemory", "Candidate", "run_pc_darts", "run_spos", "run_pnas",
           "build", "cell_network", "retrain", "retrain_data", "compare", "format_table",
           "seed_study", "summarize_seed_study", "best_of_n", "random_search", "spos_truth_study",
           "equal_budget_draws", "interval", "pnas_truth_study", "recorded_rows", "record",
           "plot_table", "plot_seed_study",
           "plot_placement", "plot_gaps", "plot_intervals"]
