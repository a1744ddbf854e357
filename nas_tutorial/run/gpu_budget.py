"""How long each notebook takes on one GPU with the ``gpu`` preset, and why it fits a class.

A notebook opened on a GPU machine runs the ``gpu`` preset (``nt.notebook_preset``); it
should finish in about 5 minutes (issue 28). Two parts make its time:

- **the preset's work**, counted from the presets (:func:`work`): training steps, search
  steps, path evaluations and evaluation batches, per notebook, as its cells run them (the
  counts are upper bounds: every evolution generation full, no fitness cache hits, 05's
  SPOS supernet trained again as if 04 had not saved it), times the time of one unit of
  each kind (:data:`UNITS`);
- **everything else** (drawings, tables read from disk, the recorded studies), which does
  not depend on the preset: what those cells took in the committed quick run (nbclient
  stores each cell's start and end in the executed notebook; the cells tagged ``preset``
  are the preset's work and are left out).

The time of one unit comes from a GPU record when one exists: ``make gpu-check`` times
every unit on the GPU at the preset's batch sizes (``source: measured``). Until then it is
**an estimate** (``source: estimate``): a step of these small networks on a GPU is bound by
the host issuing operators, not by arithmetic (issue 26 measured on an H200: a PC-DARTS
K=4 step of the same wall time at batch 64 and 256, 1.05 s of CPU time against 0.32 s of
GPU time), so a unit's time is its operator count on the CPU (PyTorch's profiler, nested
aten calls counted, :func:`nas_tutorial.run.measure.count_ops`) times the H200's time per
counted operator in that measurement: 0.70 s for a step whose CPU trace counts 159,863
operators, 4.4 us each. One point of calibration only: the record's cross-check puts the
SPOS supernet step the issue also timed (27.3 ms at batch 256, the paper's 20-layer CIFAR
supernet) at 3.3 times that, so the per-operator time differs between networks and the
estimate is a rough upper bound, not a prediction. The CPU count also leaves out what only
CUDA runs (bf16 casts, NHWC copies). Units are counted (and timed) on synthetic images of
CIFAR-10's shape: the operators of a step do not depend on the pixels.

``benchmarks/gpu_budget.py`` writes the record (``data/runs/gpu-budget.json``); a test
binds it to the presets (the same work) and to the goal (every notebook at most 300 s).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

import torch

from ..config import get_preset
from ..data import ImageDataset, load
from ..devices import resolve_device
from ..genotypes import GENOTYPES
from ..methods import pc_darts, pnas, spos
from ..network import NetworkCIFAR
from ..training import evaluate, train
from .records import REPO, load_runs

NOTEBOOKS = REPO / "notebooks"
GOAL_S = 300.0  # about 5 minutes a notebook on one GPU (issue 28)
PRESET_TAG = "preset"  # cells whose work depends on the preset (left out of the fixed part)
# Issue 26's H200 step (PC-DARTS K=4, batch 256, C=16, 8 cells, bf16): 0.70 s, whose CPU
# trace at batch 8 counts 159,863 aten operators (nested calls counted; make bench, 8795068).
H200_STEP_S, H200_STEP_OPS = 0.70, 159_863
S_PER_OP = H200_STEP_S / H200_STEP_OPS
# The same issue: one SPOS supernet training step on the H200, batch 256, CIFAR supernet.
H200_SPOS_STEP_S = 0.0273
TRAIN_SIZE = {"cifar10": 50_000, "fashion_mnist": 60_000}
TEST_SIZE = 10_000
EVAL_BATCH = 512  # evaluate()'s batch, and the search's per-epoch validation

UNITS = {
    "net_step": "00: a training step of the evaluation network (PC_DARTS cell)",
    "net_eval": "00: an evaluation batch of 512 of it",
    "child_step": "02: a training step of a PNAS child (mean over the trained cells)",
    "child_eval": "02: an evaluation batch of 512 of a child",
    "search_weight_step": "03: a warm-up step (weights only) of the PC-DARTS search",
    "search_step": "03: a search step (architecture step, then weight step)",
    "search_eval": "03: an evaluation batch of 512 of the supernet (every epoch)",
    "supernet_step": "04, 05: a SPOS supernet training step (one sampled path)",
    "path_eval": "04, 05: one path's fitness (BN recalibration, then the held-out images)",
    "alone_step": "04: a training step of a path trained stand-alone (ranking)",
    "alone_eval": "04: an evaluation batch of 512 of it",
}


def _steps(images: int, batch: int, drop_last: bool = True) -> int:
    return images // batch if drop_last else -(-images // batch)


def _train_images(dataset: str, wanted: int | None) -> int:
    return wanted if wanted is not None else TRAIN_SIZE.get(dataset, 50_000)


def live_cells(config: pnas.PNASConfig) -> int:
    """Children notebook 02 trains live: the one-block cells, then a two-block beam of 4
    (its cell ``pnas.search(replace(config, blocks=2, beam=4, ...))``)."""
    return len(pnas.one_block_cells(config.ops)) + 4


def configs(preset: str = "gpu", dataset: str | None = None) -> tuple:
    """(preset, pnas, pc-darts, spos) configs of ``preset``, on ``dataset`` if named (else
    on the data this machine has: ``config.gpu_data``)."""
    given = {"dataset": dataset} if dataset else {}
    p = get_preset(preset)
    return (replace(p, **given), pnas.get_config(preset, **given),
            pc_darts.get_config("pc-darts", preset, **given), spos.get_config(preset, **given))


def work(preset: str = "gpu", dataset: str | None = None) -> dict:
    """Notebook -> {unit: how many} that notebook runs live on ``preset``: upper bounds, as
    the module docstring says."""
    p, c, s, o = configs(preset, dataset)
    n00 = _train_images(p.dataset, p.train_images)
    t = p.train
    child = c.train
    child_train = _train_images(c.dataset, c.train_images)
    n03 = _train_images(s.dataset, s.train_images)
    half = int(n03 * s.train_portion)
    spe = _steps(min(half, n03 - half), s.batch_size)  # the two halves step together
    spe = min(spe, s.steps_per_epoch or spe)
    held = round(_train_images(o.dataset, None) * o.valid_fraction)
    valid = min(held, o.valid_images or held)
    supernet = o.epochs * _steps(_train_images(o.dataset, o.train_images), o.batch_size)
    per_search = o.generations * o.population
    alone = spos.standalone_config(o)
    ranking = o.ranking_paths * alone.epochs
    return {
        "00_getting_started": {
            "net_step": t.epochs * _steps(n00, t.batch_size),
            "net_eval": t.epochs * _steps(TEST_SIZE, EVAL_BATCH, False)},
        "01_search_space": {},
        "02_pnas": {
            "child_step": live_cells(c) * child.epochs * _steps(child_train, child.batch_size),
            "child_eval": live_cells(c) * _steps(c.valid_images or 5000, EVAL_BATCH, False)},
        "03_pc_darts": {
            "search_weight_step": s.warmup_epochs * spe,
            "search_step": (s.epochs - s.warmup_epochs) * spe,
            "search_eval": s.epochs * _steps(half, EVAL_BATCH, False)},
        # 8 paths with and without recalibration, evolution and random search, a study
        # of 5 seeds (its seed 0 is the pair's: cached), the stand-alone ranking
        "04_spos": {
            "supernet_step": supernet,
            "path_eval": 16 + 2 * per_search + 8 * per_search,
            "alone_step": ranking * _steps(_train_images(o.dataset, o.train_images),
                                           alone.batch_size),
            "alone_eval": ranking * _steps(valid, EVAL_BATCH, False)},
        "05_compare": {"supernet_step": supernet, "path_eval": 10 * per_search},
    }


def fixed_seconds(notebook: str, folder=None) -> float:
    """Seconds the cells of ``notebook`` not tagged ``preset`` took in its committed run
    (nbclient's ``execution`` timestamps in each cell's metadata)."""
    path = Path(folder or NOTEBOOKS) / f"{notebook}.ipynb"
    total = 0.0
    for cell in json.loads(path.read_text())["cells"]:
        meta = cell.get("metadata", {})
        stamps = meta.get("execution", {})
        if PRESET_TAG in meta.get("tags", []) or "shell.execute_reply" not in stamps:
            continue
        start, end = (datetime.fromisoformat(stamps[k].replace("Z", "+00:00"))
                      for k in ("iopub.execute_input", "shell.execute_reply"))
        total += (end - start).total_seconds()
    return total


def budget(units: dict, preset: str = "gpu", dataset: str | None = None, folder=None) -> dict:
    """Notebook -> {work, work_s, fixed_s, total_s} from ``units`` (unit -> seconds)."""
    out = {}
    for nb, counts in work(preset, dataset).items():
        work_s = sum(n * units[u] for u, n in counts.items())
        fixed = fixed_seconds(nb, folder)
        out[nb] = {"work": counts, "work_s": work_s, "fixed_s": fixed, "total_s": work_s + fixed}
    return out


def latest(root=None) -> dict | None:
    """The newest ``gpu-budget`` record, a measured one before any estimate."""
    runs = load_runs("gpu-budget", root)
    measured = [r for r in runs if r["payload"].get("source") == "measured"]
    return (measured or runs or [None])[0]


# -- one unit of each kind, run n times ---------------------------------------------------------
def _data(dataset: str, size, n: int, device) -> ImageDataset:
    return load(dataset, train=True, size=size or 32, device=device, n=n)


def runners(preset: str = "gpu", device="cpu", batch: int | None = None) -> tuple:
    """({unit: ``run(n)``}, {"child_cells": how many cells a child run trains}): ``run(n)``
    does ``n`` units through the library's own loops (plus a fixed cost that the difference
    of two runs cancels, :func:`per_unit`). ``batch``
    replaces every batch size (op counts do not depend on it; timings on the GPU use the
    preset's own)."""
    device = resolve_device(device)
    p, c, s, o = configs(preset, "synthetic")  # CIFAR-10's shape: 3 x 32 x 32

    def b(size):
        return batch or size

    net_data = _data(p.dataset, p.image_size, 4 * b(max(p.train.batch_size, EVAL_BATCH)), device)

    def net():
        torch.manual_seed(0)
        return NetworkCIFAR(GENOTYPES["PC_DARTS"], p.channels, net_data.num_classes, p.layers,
                            auxiliary=p.auxiliary, in_channels=net_data.shape[0]).to(device)

    def train_steps(model_fn, data, tc):
        return lambda n: train(model_fn(), data, replace(tc, epochs=1, steps_per_epoch=n,
                                                         batch_size=b(tc.batch_size)),
                               device=device, progress=False)

    def eval_batches(model_fn, data):
        model = model_fn()
        return lambda n: evaluate(model, data.subset(slice(0, n * b(EVAL_BATCH))), device,
                                  batch_size=b(EVAL_BATCH))

    # PNAS: every one-block cell and four two-block children, each trained in turn
    cells = pnas.one_block_cells(c.ops)
    cells += random.Random(0).sample(pnas.expand_all(cells, c.ops), 4)
    child_data = _data(c.dataset, c.image_size, 4 * b(max(c.train.batch_size, EVAL_BATCH)),
                       device)

    def child(cell):
        torch.manual_seed(0)
        return NetworkCIFAR(pnas.Genotype.from_cell(cell), c.channels, child_data.num_classes,
                            c.layers, in_channels=child_data.shape[0]).to(device)

    def every_child(make):
        runs = [make(lambda cell=cell: child(cell)) for cell in cells]
        return lambda n: [r(n) for r in runs]

    # PC-DARTS: the search itself, one epoch of n steps, weight-only or not
    def search(warmup):
        bs = b(s.batch_size)  # halves of 4 batches: the same validation in every run
        cfg = replace(s, epochs=1, warmup_epochs=warmup, batch_size=bs, train_images=8 * bs)
        return lambda n: pc_darts.search(replace(cfg, steps_per_epoch=n), device=device,
                                         progress=False)

    def supernet():
        torch.manual_seed(0)
        return pc_darts.SearchNetwork(s.C, 10, s.layers, s.k, s.edge_norm, s.steps,
                                      s.multiplier, in_channels=net_data.shape[0], fast=True,
                                      fused=pc_darts.uses_fused_cells(s, device)).to(device)

    # SPOS: the held-out images as many as the fitness reads
    tr = _data(o.dataset, o.image_size, 4 * b(max(o.batch_size, o.recal_batch_size)), device)
    va = _data(o.dataset, o.image_size, o.valid_images or 5000, device)
    ocfg = replace(o, epochs=1, batch_size=b(o.batch_size))

    def train_supernet(n):
        torch.manual_seed(0)
        spos.train_supernet(spos.Supernet(o.supernet), tr.subset(slice(0, n * ocfg.batch_size)),
                            ocfg, device, progress=False)

    torch.manual_seed(0)
    trained = spos.Supernet(o.supernet).to(device)
    evaluator = spos.PathEvaluator(trained, tr, va, o.recal_batches, b(o.recal_batch_size),
                                   amp=o.amp, seed=o.seed)
    paths = iter(spos.random_path(o.supernet, random.Random(k)) for k in range(10 ** 6))
    path = spos.random_path(o.supernet, random.Random(-1))

    def alone():
        torch.manual_seed(0)
        return spos.Supernet(o.supernet, path).to(device)

    return {
        "net_step": train_steps(net, net_data, p.train),
        "net_eval": eval_batches(net, net_data),
        "child_step": every_child(lambda make: train_steps(make, child_data, c.train)),
        "child_eval": every_child(lambda make: eval_batches(make, child_data)),
        "search_weight_step": search(warmup=1),
        "search_step": search(warmup=0),
        "search_eval": eval_batches(supernet, net_data),
        "supernet_step": train_supernet,
        "path_eval": lambda n: [evaluator.accuracy(next(paths)) for _ in range(n)],
        "alone_step": train_steps(alone, tr, spos.standalone_config(o)),
        "alone_eval": eval_batches(alone, va),
    }, {"child_cells": len(cells)}


def per_unit(run, measure, small: int = 1, large: int = 3) -> float:
    """``measure(run(n))`` per unit: the difference of ``large`` and ``small`` units, which
    cancels what a run costs once (building, loading, the last evaluation); never below 0
    (a timing's noise can exceed a few units)."""
    return max(0.0, (measure(lambda: run(large)) - measure(lambda: run(small))) / (large - small))


def wall_time(device) -> callable:
    device = resolve_device(device)

    def measure(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0
    return measure


def estimate_units(preset: str = "gpu", batch: int = 16, progress=print) -> dict:
    """Unit -> {ops, seconds}: operators per unit on the CPU (one thread, at ``batch``),
    times :data:`S_PER_OP`. PNAS children: the mean over the cells notebook 02 trains."""
    from .measure import count_ops

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run, info = runners(preset, "cpu", batch)
        out = {}
        for name, fn in run.items():
            ops = per_unit(fn, count_ops)
            if name.startswith("child_"):
                ops /= info["child_cells"]
            out[name] = {"ops": round(ops), "seconds": ops * S_PER_OP}
            progress(f"{name}: {ops:,.0f} operators, estimated {ops * S_PER_OP * 1e3:.1f} ms")
    finally:
        torch.set_num_threads(threads)
    return out


def measure_units(preset: str = "gpu", device="cuda", progress=print) -> dict:
    """Unit -> {seconds}: each unit timed on ``device`` at the preset's batch sizes
    (``make gpu-check``)."""
    run, info = runners(preset, device)
    out = {}
    clock = wall_time(device)
    for name, fn in run.items():
        fn(1)  # warm-up: kernels chosen, caches filled
        sec = min(per_unit(fn, clock, 1, 5) for _ in range(2))  # the quieter of two
        if name.startswith("child_"):
            sec /= info["child_cells"]
        out[name] = {"seconds": sec}
        progress(f"{name}: {sec * 1e3:.1f} ms")
    return out


def spos_cross_check(batch: int = 8) -> dict:
    """The estimate for the SPOS step issue 26 timed on the H200 (the 20-layer CIFAR
    supernet), against that time."""
    from .measure import count_ops

    cfg = replace(spos.get_config("full"), dataset="synthetic", train_images=None, epochs=1,
                  batch_size=batch, valid_fraction=0.5)
    data = load("synthetic", n=8 * batch, size=32)

    def run(n):
        torch.manual_seed(0)
        spos.train_supernet(spos.Supernet(cfg.supernet), data.subset(slice(0, n * batch)), cfg,
                            "cpu", progress=False)
    ops = per_unit(run, count_ops)
    return {"ops": round(ops), "estimate_s": ops * S_PER_OP, "h200_s": H200_SPOS_STEP_S}


def describe(record: dict) -> str:
    """The record as lines: per notebook the work, the fixed part and the total."""
    pay = record["payload"]
    kind = "measured on " + record["device"] if pay["source"] == "measured" else (
        "ESTIMATE from CPU operator counts x the H200's time per operator (issue 26)")
    lines = [f"gpu preset on {pay['dataset']}: {kind}, {record['recorded_at'][:10]}"]
    for nb, row in pay["notebooks"].items():
        lines.append(f"  {nb:<20} {row['total_s']:6.0f} s  (preset work {row['work_s']:5.0f} s, "
                     f"the rest {row['fixed_s']:4.0f} s)")
    return "\n".join(lines)


def config_fingerprint(preset: str = "gpu", dataset: str | None = None) -> dict:
    """The settings the work depends on, as recorded (a test compares them)."""
    names = ("preset", "pnas", "pc_darts", "spos")
    return json.loads(json.dumps({n: asdict(c) for n, c in zip(names, configs(preset, dataset))},
                                 default=str))


def make_record(units: dict, source: str, preset: str = "gpu", cross_check=None) -> dict:
    """The payload of a ``gpu-budget`` record: the units, each notebook's budget, the
    settings they were counted for."""
    dataset = configs(preset)[0].dataset
    return {"source": source, "preset": preset, "dataset": dataset, "goal_s": GOAL_S,
            "s_per_op": S_PER_OP if source == "estimate" else None, "units": units,
            "notebooks": budget({k: v["seconds"] for k, v in units.items()}, preset),
            "config": config_fingerprint(preset), "cross_check": cross_check}


__all__ = ["GOAL_S", "S_PER_OP", "UNITS", "configs", "work", "fixed_seconds", "budget", "latest",
           "runners", "per_unit", "estimate_units", "measure_units", "spos_cross_check",
           "describe", "config_fingerprint", "make_record", "live_cells"]

