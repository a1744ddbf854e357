"""Ground-truth tables: a small NAS benchmark of the project's own.

Papers show their key figures against architectures trained stand-alone: PNAS scores its
surrogates on cells it trained (Sec. 5.2), SPOS ranks its supernet against stand-alone
training (Sec. 4.2, Fig. 4 / Table 2), DARTS and PC-DARTS set their cells against random
cells of the same space (DARTS Sec. 3.3, Table 1). NAS-Bench-101/201 (Ying et al. 2019;
Dong & Yang 2020) made such tables a shared tool: train a defined set of architectures
once, with one protocol and several seeds, and let every later experiment look them up.
The quick notebooks cannot train hundreds of networks live, so the project ships tables
of its own, measured with each method's quick protocol:

- ``pnas``: every 1-block and 2-block cell over the quick op set and random 3-block cells,
  each trained as a PNAS child (``pnas.ChildTrainer``: the search's data, network and
  optimizer; validation accuracy on the held-out images, the search's target);
- ``spos``: stand-alone paths of the quick supernet space from its lowest to its highest
  FLOPs (evenly spaced quantiles of uniformly drawn paths), trained from scratch
  (``spos.standalone_config``) and scored on all 10,000 held-out images (the supernet's
  fitness reads the first 2,000 of them);
- ``pc-darts``: random genotypes of the quick search space (DARTS's random baseline,
  ``compare.random_genotype``) and the published cells, retrained with the quick preset's
  training settings and scored on the test set (``compare.retrain_data``).

A table is a small JSON file (``data/tables/METHOD-PRESET.json``): a header with the
protocol, the device, the date, the torch version, the wall time and the machines that
trained it (:func:`nas_tutorial.devices.machine`; a row's ``machine`` lists, per seed, which
one, where it is not the first); one row per architecture with its encoding, params, FLOPs
and the accuracy of every seed; and the table's own noise and signal (:func:`summarize`). Seed ``s`` of a row is the method's
training with run seed ``s``, so a search with seed ``s`` (``s`` below the table's number
of seeds; larger seeds wrap around) that looks a row up sees the noise a live training
with that seed would give. Making a table checkpoints after every
row and resumes. Reading a table is :mod:`nas_tutorial.groundtruth` (the methods take a table from there);
this module makes them, and imports the methods to do so.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..methods import pc_darts, pnas, spos
from . import compare
from .folders import check_free, claim
from ..checkpoints import write_json
from ..config import get_preset
from ..devices import device_label, machine, resolve_device, set_threads
from ..flops import count_flops
from ..genotypes import GENOTYPES, Genotype
from ..groundtruth import (METHODS, SHIPPED, Table, TableError, default_path,  # noqa: F401
                           find, load, summarize)  # nt.tables.load and friends, as before
from ..network import count_params
from ..progress import progress_bar
from ..training import evaluate, run_threads, train

# -- the architectures and how each is trained ---------------------------------------------
@dataclass
class Spec:
    """What a table holds and how one row is trained.

    ``rows``: dicts with ``key`` (unique name), ``group`` and ``arch`` (JSON-able);
    ``protocol``: the settings every row is trained with (the header records it);
    ``measure(arch) -> (params, flops)``; ``train(arch, seed) -> accuracy``;
    ``train_seeds(arch, seeds) -> accuracies``, where given, trains the seeds at once (one
    thread each) with the same results as ``train`` one by one.
    """

    method: str
    rows: list
    protocol: dict
    measure: object
    train: object
    note: str = ""
    train_seeds: object = None


def _pnas_spec(preset: str, device) -> Spec:

    config = pnas.get_config(preset)
    ops = config.ops
    one = pnas.one_block_cells(ops)
    two = pnas.expand_all(one, ops)
    three = pnas.random_cells(RANDOM_PNAS_CELLS, 3, ops, seed=TABLE_SEED)
    rows = ([{"key": pnas.cell_key(c), "group": "1-block", "arch": c} for c in one]
            + [{"key": pnas.cell_key(c), "group": "2-block", "arch": c} for c in two]
            + [{"key": pnas.cell_key(c), "group": "random 3-block", "arch": c} for c in three])
    trainers = {}

    def trainer(seed):
        if seed not in trainers:  # one per seed: the seed is part of the child's init seed
            trainers[seed] = pnas.ChildTrainer(replace(config, seed=seed), device, workers=1)
        return trainers[seed]

    def measure(cell):
        net = trainer(0).build(_cell(cell))
        return count_params(net), count_flops(net, trainer(0).train_set.shape)

    def train_seeds(cell, seeds):
        # Models are built (seeded) here, trained in threads: as ChildTrainer does, so the
        # accuracies equal those of one-by-one training (the PNAS tests check this); Ctrl-C
        # stops every seed at its next step (training.run_threads).
        cell = _cell(cell)
        jobs = [(trainer(s), trainer(s).build(cell), pnas.child_seed(cell, s)) for s in seeds]
        return run_threads([partial(t._train_one, model, cs, 0, cell) for t, model, cs in jobs],
                           len(jobs))

    protocol = pnas.child_protocol(config)
    return Spec("pnas", rows, protocol, measure,
                lambda cell, seed: trainer(seed)([_cell(cell)])[0],
                note="validation accuracy of a PNAS child (pnas.ChildTrainer)",
                train_seeds=train_seeds)


def _cell(cell) -> tuple:
    return tuple((str(op), int(i)) for op, i in cell)


def spos_protocol(cfg) -> dict:
    """How the ``spos`` ground-truth table trains a path stand-alone for these settings (its
    header's ``protocol``): a table answers for a supernet only when this matches."""
    train = asdict(spos.standalone_config(cfg, 0))
    train.pop("seed")
    return {"dataset": cfg.dataset, "image_size": cfg.image_size,
            "train_images": cfg.train_images, "valid_images": cfg.valid_images,
            "supernet": asdict(cfg.supernet), "train": train}


def spos_table(cfg):
    """The shipped ``spos`` table whose protocol is :func:`spos_protocol` of ``cfg``, or
    None (the full preset has none: its paths take GPU-hours to train stand-alone)."""
    return find("spos", spos_protocol(cfg))


def _spos_spec(preset: str, device, space: str = "blocks") -> Spec:
    cfg = spos.get_config(preset, space=space)
    sc = cfg.supernet
    rng = random.Random(TABLE_SEED)
    if space == "blocks":
        # From the lowest to the highest FLOPs: 4,000 uniform paths sorted by FLOPs, then
        # evenly spaced quantiles, so the table follows the FLOPs distribution the
        # supernet's uniform sampling sees (denser in the middle than at the ends).
        pool = sorted({spos.random_path(sc, rng) for _ in range(4000)},
                      key=lambda p: (spos.count_flops(p, sc), p))
        picks = np.linspace(0, len(pool) - 1, SPOS_PATHS).round().astype(int)
        paths = list(dict.fromkeys(pool[i] for i in picks))
    else:
        paths = _spread_paths(sc, SPOS_CHANNEL_PATHS, rng)
    rows = [{"key": spos.path_key(p), "group": "stand-alone path", "arch": list(p)}
            for p in paths]
    data = {}

    def splits():
        if not data:
            data["train"], data["valid"] = spos.load_data(cfg, device, cap=False)
        return data["train"], data["valid"]

    def run(path, seed):
        train_ds, valid_ds = splits()
        torch.manual_seed(seed)
        net = spos.Supernet(sc, tuple(path))
        train(net, train_ds, spos.standalone_config(cfg, seed), device=device, progress=False)
        return evaluate(net, valid_ds, device)[1]

    return Spec("spos", rows, spos_protocol(cfg),
                lambda p: (spos.count_params(p, sc), spos.count_flops(p, sc)), run,
                note="held-out accuracy of the path trained stand-alone (spos.standalone_config)")


def _spread_paths(sc, n: int, rng) -> list:
    """``n`` paths of the channel space spread evenly over its FLOPs range: uniform paths
    crowd the middle (a sum of 6 layers), so the pool adds paths drawn around one width
    level each (every layer's scale within one step of it), which reach both ends; then, for
    each of ``n`` FLOPs evenly spaced from the pool's lowest to its highest, the nearest
    path not taken yet."""
    scales = len(sc.channel_scales)
    pool = {spos.random_path(sc, rng) for _ in range(4000)}
    for _ in range(4000):
        level = rng.randrange(scales)
        pool.add(tuple(rng.randrange(len(spos.CHOICES)) * scales
                       + min(scales - 1, max(0, level + rng.randint(-1, 1)))
                       for _ in range(sc.num_layers)))
    pool = sorted(pool, key=lambda p: (spos.count_flops(p, sc), p))
    flops = np.array([spos.count_flops(p, sc) for p in pool], dtype=float)
    taken, out = set(), []
    for target in np.linspace(flops[0], flops[-1], n):
        order = np.argsort(np.abs(flops - target), kind="stable")
        i = next(int(i) for i in order if int(i) not in taken)
        taken.add(i)
        out.append(pool[i])
    return out


def _pc_darts_spec(preset: str, device) -> Spec:
    p = get_preset(preset)
    search = pc_darts.get_config("pc-darts", preset)
    rows = [{"key": f"random-{i:02d}", "group": "random",
             "arch": compare.random_genotype(TABLE_SEED + i, search.steps,
                                             search.multiplier).to_dict()}
            for i in range(PC_DARTS_RANDOM)]
    rows += [{"key": name, "group": "published", "arch": g.to_dict()}
             for name, g in GENOTYPES.items()]
    data = {}

    def splits():
        if not data:
            data["train"], data["test"] = compare.retrain_data(preset, device)
        return data["train"], data["test"]

    def net(arch, seed):
        train_ds, _ = splits()
        return compare.cell_network(Genotype.from_dict(arch), preset, train_ds.num_classes,
                                    train_ds.shape[0], seed)

    def measure(arch):
        model = net(arch, 0)
        return count_params(model), count_flops(model, splits()[0].shape)

    def run(arch, seed, progress=False):
        train_ds, test_ds = splits()
        model = net(arch, seed)
        cfg = replace(p.train, seed=seed)
        train(model, train_ds, cfg, device=device, progress=progress)
        return evaluate(model, test_ds, device, amp=cfg.amp)[1]

    protocol = {"dataset": p.dataset, "image_size": p.image_size,
                "train_images": p.train_images, "channels": p.channels, "layers": p.layers,
                "auxiliary": p.auxiliary, "search_steps": search.steps,
                "search_multiplier": search.multiplier, "train": asdict(p.train)}
    protocol["train"].pop("seed")
    return Spec("pc-darts", rows, protocol, measure, run,
                note="test accuracy after retraining with the quick preset (compare.retrain)")


TABLE_SEED = 0            # draws the random architectures of every table (not a run seed)
RANDOM_PNAS_CELLS = 400   # random 3-block cells in the pnas table
SPOS_PATHS = 32           # stand-alone paths in the spos table (block space)
SPOS_CHANNEL_PATHS = 48   # ... and in the channel space's table (spos-PRESET-channels)
PC_DARTS_RANDOM = 24      # random genotypes in the pc-darts table (DARTS: best of 24)
_SPECS = {"pnas": _pnas_spec, "spos": _spos_spec, "pc-darts": _pc_darts_spec}


def spec(method: str, preset: str = "quick", device="cpu", space: str = "blocks") -> Spec:
    """What ``method``'s table holds and how it trains a row; ``space="channels"`` is SPOS's
    channel space (its own table, ``spos-PRESET-channels.json``)."""
    return _factory(method, space)(preset, device)


def _factory(method: str, space: str = "blocks"):
    if method not in METHODS:
        raise TableError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    if space not in spos.SPACES or (space != "blocks" and method != "spos"):
        raise TableError(f"space '{space}' is SPOS's only (spos: {', '.join(spos.SPACES)})")
    return _SPECS[method] if space == "blocks" else partial(_SPECS[method], space=space)


def table_name(preset: str, space: str = "blocks") -> str:
    """The name part of a table's file: the preset, ``-channels`` for SPOS's channel space."""
    return preset if space == "blocks" else f"{preset}-{space}"


def check_protocol(table: Table, s: Spec) -> None:
    """Refuse, in one line, a table whose recorded protocol is not the one ``s`` trains
    with (a changed preset would otherwise be set against a stale table)."""
    if json.loads(json.dumps(s.protocol)) != table.header.get("protocol"):
        raise TableError(f"the {table.method} table was made with another protocol than "
                         f"this code's; remake it with `nas-tutorial table {table.method}`")


def retrain(method: str, arch, seed: int = 0, preset: str = "quick", device="cpu",
            table: Table | None = None, progress: bool = False, group: str = "random") -> dict:
    """Train ``arch`` (a table encoding, e.g. ``Genotype.to_dict()``) from scratch with the
    table's own protocol and run seed ``seed``, and place it among the ``group``'s rows.

    Returns ``accuracy`` (rounded as the table stores it), ``percentile``
    (:meth:`Table.percentile`), ``random_median`` (of the group's trainings) and
    ``seconds``. A stale table (:func:`check_protocol`) or a missing group is refused before
    any training.
    """
    device = resolve_device(device)
    table = table if table is not None else load(method, preset)
    s = spec(method, preset, device)
    check_protocol(table, s)
    reference = table.trainings(group)  # refuses a missing group now, not after training
    t0 = time.perf_counter()
    accuracy = round(float(s.train(arch, seed, progress=progress) if progress
                           else s.train(arch, seed)), 6)
    return {"accuracy": accuracy, "percentile": table.percentile(accuracy, group),
            "random_median": float(np.median(reference)),
            "seconds": time.perf_counter() - t0}


def make(method: str, preset: str = "quick", seeds: int | None = None, out=None,
         resume: bool = False, device="cpu", threads: int | None = 1, limit: int | None = None,
         progress: bool = True, parallel: bool = False, workers: int = 1,
         space: str = "blocks") -> Table:
    """Train every architecture of ``method``'s table with ``seeds`` seeds and write it.

    Checkpoints ``out`` after every row; ``resume=True`` continues a file made with the
    same protocol, and with more ``seeds`` than the file holds it *extends* the table:
    each row trains only its missing seeds (seed ``s`` is the same training whenever and
    wherever it runs), and the header lists the new seeds once every row has them (until
    then the table reads as before). ``seeds=None``: 2 for a new table, what the file
    holds or was being extended to for a resume.

    ``threads`` sets torch's CPU threads (one is the fastest for these tiny networks on a
    shared machine). ``limit`` trains at most ``limit`` rows, in order (resume later).
    ``parallel=True`` trains the seeds of a row at once in threads, where the method allows
    it (pnas). ``workers=N`` trains N rows at once in N processes of one thread each (on a
    GPU machine they share the GPU); the rows and seeds land where one process puts them.
    ``space="channels"``: SPOS's channel space (:func:`spec`), its own file.
    Every seed of every row records the machine that trained it
    (:func:`nas_tutorial.devices.machine`), so a recorded number is compared bit for bit
    only where it was made.
    """
    if seeds is not None and seeds < 1:
        raise TableError(f"seeds must be at least 1, got {seeds}")
    if workers < 1:
        raise TableError(f"workers must be at least 1, got {workers}")
    device = resolve_device(device)
    factory = _factory(method, space)  # refuses a space the method does not have
    out = Path(out) if out is not None else default_path(method, table_name(preset, space))
    _check_table_file(out)
    check_free(out, "file")  # another process making this table: refused, named
    if out.exists() and not resume:
        raise TableError(f"{out} exists; continue it with --resume or name another --out")
    if resume and not out.is_file():
        raise TableError(f"nothing to resume at {out}")
    held = claim(out, "file")  # one process per table file, from here to the end
    old_threads = torch.get_num_threads()
    if parallel or workers > 1:
        threads = 1  # one thread per training, so trainings run side by side
    if threads is not None and device.type == "cpu":
        set_threads(threads)
    try:
        s = factory(preset, device)
        here = {"device": device_label(device), **machine(device)}
        old = load(method, preset, out) if resume else None
        if old is None:
            seeds = seeds or 2
            header = {"preset": preset, "protocol": s.protocol, "note": s.note,
                      "seeds": list(range(seeds)), "device": here["device"],
                      "torch": torch.__version__, "created": time.strftime("%Y-%m-%d"),
                      "wall_s": 0.0, "machines": []}
            if space != "blocks":
                header["space"] = space
        else:
            header = _resume_header(old, s, out, seeds)
            seeds = header.get("seeds_planned", len(header["seeds"]))
        machines = header["machines"]
        if here not in machines:
            machines.append(here)
        me = machines.index(here)
        rows = {r["key"]: dict(r) for r in (old.rows if old else [])}
        todo = [(row, len(rows.get(row["key"], {}).get("accuracy", [])))
                for row in s.rows]
        todo = [(row, first) for row, first in todo if first < seeds][:limit]
        table = Table(method, header, [])
        t_start, wall0 = time.perf_counter(), header["wall_s"]

        def land(row, measured, accs, seconds):
            """Put a row's new seeds in place and checkpoint the table."""
            r = rows.setdefault(row["key"], {**row, "accuracy": []})
            if measured is not None:
                r["params"], r["flops"] = int(measured[0]), int(measured[1])
            index = r.pop("machine", None) or [0] * len(r["accuracy"])
            r["accuracy"] = r["accuracy"] + accs
            index = index + [me] * len(accs)
            if any(index):
                r["machine"] = index
            r["seconds"] = round(r.get("seconds", 0.0) + seconds, 2)
            # rows in the spec's order whatever order the workers finish them in
            table.rows = [rows[x["key"]] for x in s.rows if x["key"] in rows]
            table._index = {x["key"]: x for x in table.rows}
            if all(len(x["accuracy"]) >= seeds for x in table.rows) and \
                    len(table.rows) == len(s.rows):
                header["seeds"] = list(range(seeds))
                header.pop("seeds_planned", None)
            header["wall_s"] = round(wall0 + time.perf_counter() - t_start, 1)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(out, table.to_dict())

        bar = progress_bar(sum(seeds - first for _, first in todo), f"{method} table", progress)
        jobs = [(row, list(range(first, seeds)), row["key"] not in rows or "params" not in
                 rows[row["key"]]) for row, first in todo]
        if workers == 1:
            for row, todo_seeds, measure in jobs:
                t0 = time.perf_counter()
                measured = s.measure(row["arch"]) if measure else None
                if parallel and s.train_seeds is not None and len(todo_seeds) > 1:
                    accs = [round(float(a), 6) for a in s.train_seeds(row["arch"], todo_seeds)]
                else:
                    accs = [round(float(s.train(row["arch"], seed)), 6) for seed in todo_seeds]
                bar.update(len(accs))
                land(row, measured, accs, time.perf_counter() - t0)
                bar.set_postfix(acc=f"{np.mean(accs):.3f}")
        else:
            _run_workers(jobs, workers, factory, preset, str(device), land, bar)
        bar.close()
        table.rows = [rows[x["key"]] for x in s.rows if x["key"] in rows]
        table._index = {x["key"]: x for x in table.rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, table.to_dict())
        return table
    finally:
        torch.set_num_threads(old_threads)
        held.release()


def _resume_header(old: Table, s: Spec, out: Path, seeds: int | None) -> dict:
    """The header a resumed (or extended) table continues with; refuses another protocol
    or fewer seeds than the file holds."""
    if json.loads(json.dumps(s.protocol)) != old.header.get("protocol"):
        raise TableError(f"{out} was made with another protocol; start a new file with --out")
    have = len(old.seeds)
    planned = old.header.get("seeds_planned", have)
    seeds = seeds or planned
    if seeds < have:
        raise TableError(f"{out} holds {have} seeds per row; --seeds must be at least {have} "
                         f"(more extends the table)")
    header = json.loads(json.dumps(old.header))
    # A table from before machines were recorded: its trainings are machine 0, unknown.
    header.setdefault("machines", [{"device": header.get("device"),
                                    "torch": header.get("torch"), "fingerprint": None}])
    if seeds > have:
        header["seeds_planned"] = seeds
    else:  # --seeds as the file holds: an extension under way is given up (rows keep theirs)
        header.pop("seeds_planned", None)
    return header


def _run_workers(jobs, workers, factory, preset, device, land, bar) -> None:
    """Train ``jobs`` (row, seeds, measure?) in ``workers`` processes of one thread each and
    ``land`` every finished row. At most two rows per worker are in flight, so a stopped run
    loses little; Ctrl-C stops the workers and keeps every landed row. ``factory(preset,
    device)`` makes the spec in each worker."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(factory, preset, device))
    pending, queue = {}, list(jobs)
    try:
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                row, todo_seeds, measure = queue.pop(0)
                pending[pool.submit(_worker_row, row["arch"], todo_seeds, measure)] = row
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                row = pending.pop(f)
                measured, accs, seconds = f.result()
                bar.update(len(accs))
                land(row, measured, accs, seconds)
                bar.set_postfix(acc=f"{np.mean(accs):.3f}")
    finally:
        for p in list(getattr(pool, "_processes", {}).values()):
            if queue or pending:
                p.terminate()  # stopped: the rows in flight are lost, the landed ones kept
        pool.shutdown(wait=True, cancel_futures=True)


_WORKER = {}


def _worker_init(factory, preset, device):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    set_threads(1)
    _WORKER["spec"] = factory(preset, torch.device(device))


def _worker_row(arch, seeds, measure):
    s, t0 = _WORKER["spec"], time.perf_counter()
    measured = s.measure(arch) if measure else None
    accs = [round(float(s.train(arch, seed)), 6) for seed in seeds]
    return measured, accs, time.perf_counter() - t0


def _check_table_file(out: Path) -> None:
    """A table file ``out`` must be writable before hours of training: not a folder, not
    under a file, in a folder that exists or can be made and can be written."""
    if out.is_dir():
        raise TableError(f"{out} is a folder; --out names the table's JSON file, "
                         f"e.g. {out / 'table.json'}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise TableError(f"cannot write {out}: {parent} is a file; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TableError(f"cannot write {out}: {parent} is not writable; choose another --out")


def cli_table(method, preset="quick", seeds=None, out=None, resume=False, threads=None,
              limit=None, parallel=False, device="cpu", workers=1, space="blocks") -> dict:
    """``nas-tutorial table METHOD``: make (or resume, or extend) a table and print its
    summary."""
    name = preset or "quick"
    table = make(method, name, seeds, out, resume, device=device, threads=threads,
                 limit=limit, parallel=parallel, workers=workers, space=space)
    return {"table": table,
            "path": Path(out) if out else default_path(method, table_name(name, space))}


__all__ = ["METHODS", "Spec", "Table", "TableError", "spec", "summarize", "load", "make",
           "retrain", "check_protocol", "default_path", "cli_table", "table_name"]
