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
protocol, the device, the date, the torch version and the wall time; one row per
architecture with its encoding, params, FLOPs and the accuracy of every seed; and the
table's own noise and signal (:func:`summarize`). Seed ``s`` of a row is the method's
training with run seed ``s``, so a search with seed ``s`` (``s`` below the table's number
of seeds; larger seeds wrap around) that looks a row up sees the noise a live training
with that seed would give. Making a table checkpoints after every
row and resumes. The algorithms do not import this module; only ``search pc-darts
--retrain`` reads it, after a search, to place the found cell (:func:`retrain`).
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .checkpoints import write_json

METHODS = ("pnas", "spos", "pc-darts")


class TableError(ValueError):
    """A table that cannot be made, resumed or read as asked; the message is one line."""


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
    from . import pnas
    from .flops import count_flops
    from .network import count_params

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
        from functools import partial

        from .training import run_threads

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


def _spos_spec(preset: str, device) -> Spec:
    import random

    from . import spos
    from .training import evaluate, train

    cfg = spos.get_config(preset)
    sc = cfg.supernet
    # From the lowest to the highest FLOPs: 4,000 uniform paths sorted by FLOPs, then evenly
    # spaced quantiles, so the table follows the FLOPs distribution the supernet's uniform
    # sampling sees (denser in the middle than at the ends).
    rng = random.Random(TABLE_SEED)
    pool = sorted({spos.random_path(sc, rng) for _ in range(4000)},
                  key=lambda p: (spos.count_flops(p, sc), p))
    picks = np.linspace(0, len(pool) - 1, SPOS_PATHS).round().astype(int)
    paths = list(dict.fromkeys(pool[i] for i in picks))
    rows = [{"key": "".join(map(str, p)), "group": "stand-alone path", "arch": list(p)}
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

    return Spec("spos", rows, spos.table_protocol(cfg),
                lambda p: (spos.count_params(p, sc), spos.count_flops(p, sc)), run,
                note="held-out accuracy of the path trained stand-alone (spos.standalone_config)")


def _pc_darts_spec(preset: str, device) -> Spec:
    from . import compare, pc_darts
    from .config import get_preset
    from .flops import count_flops
    from .genotypes import GENOTYPES, Genotype
    from .network import count_params

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
        from .training import evaluate, train

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


SHIPPED = Path(__file__).resolve().parent.parent / "data" / "tables"
TABLE_SEED = 0            # draws the random architectures of every table (not a run seed)
RANDOM_PNAS_CELLS = 400   # random 3-block cells in the pnas table
SPOS_PATHS = 32           # stand-alone paths in the spos table
PC_DARTS_RANDOM = 24      # random genotypes in the pc-darts table (DARTS: best of 24)
_SPECS = {"pnas": _pnas_spec, "spos": _spos_spec, "pc-darts": _pc_darts_spec}


def spec(method: str, preset: str = "quick", device="cpu") -> Spec:
    if method not in METHODS:
        raise TableError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    return _SPECS[method](preset, device)


# -- the table -------------------------------------------------------------------------------
@dataclass
class Table:
    """A ground-truth table: the header, the rows and lookups by key and seed."""

    method: str
    header: dict
    rows: list = field(default_factory=list)

    def __post_init__(self):
        self._index = {r["key"]: r for r in self.rows}

    @property
    def seeds(self) -> list:
        return list(self.header["seeds"])

    def row(self, key: str) -> dict:
        if key not in self._index:
            raise KeyError(f"{key!r} is not in the {self.method} table")
        return self._index[key]

    def accuracy(self, key: str, seed: int | None = None) -> float:
        """The recorded accuracy of ``key`` for run seed ``seed`` (a search with seed s
        reads the table's seed ``s mod n_seeds``), or the mean over seeds when None."""
        acc = self.row(key)["accuracy"]
        return float(np.mean(acc)) if seed is None else float(acc[seed % len(acc)])

    def trainings(self, group: str = "random") -> np.ndarray:
        """Every single training of the ``group``'s complete rows (all seeds of all rows):
        the distribution one more training of a new architecture is placed in."""
        rows = [r for r in self.complete() if r["group"] == group]
        if not rows:
            raise TableError(f"the {self.method} table has no complete '{group}' rows")
        return np.array([a for r in rows for a in r["accuracy"]], dtype=float)

    def percentile(self, accuracy: float, group: str = "random") -> float:
        """Where one training's ``accuracy`` falls among the ``group``'s trainings: the
        percentage of them below it, ties counted half (50 = the group's median). One
        training is set against single trainings, so both sides carry the seed noise."""
        ref = self.trainings(group)
        below = (ref < accuracy).sum() + 0.5 * (ref == accuracy).sum()
        return float(100.0 * below / len(ref))

    def __contains__(self, key) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self.rows)

    def complete(self) -> list:
        """Rows with an accuracy for every seed."""
        n = len(self.seeds)
        return [r for r in self.rows if len(r.get("accuracy", [])) == n]

    def groups(self) -> dict:
        out = {}
        for r in self.rows:
            out.setdefault(r["group"], []).append(r)
        return out

    def stats(self) -> dict:
        return summarize(self.complete())

    def to_dict(self) -> dict:
        stats = {k: (None if isinstance(v, float) and np.isnan(v) else v)  # JSON has no NaN
                 for k, v in self.stats().items()}
        return {"method": self.method, **self.header, "stats": stats, "rows": self.rows}

    def __repr__(self) -> str:
        s = self.stats()
        return (f"Table({self.method}: {len(self.complete())} of {len(self)} rows x "
                f"{len(self.seeds)} seeds, seed SD {s['seed_sd']:.4f}, spread "
                f"{s['arch_sd']:.4f}, seed-vs-seed Spearman {s['seed_spearman']:.2f})")


def summarize(rows) -> dict:
    """A table's noise and signal: ``seed_sd``, the mean over architectures of the
    standard deviation across seeds (ddof 1); ``arch_sd``, the standard deviation across
    architectures of the mean accuracy; ``seed_spearman``, the mean over seed pairs of the
    Spearman correlation between two seeds' accuracies (how well one training run ranks
    the architectures as another would)."""
    from scipy.stats import spearmanr

    acc = np.array([r["accuracy"] for r in rows], dtype=float)  # (archs, seeds)
    out = {"rows": int(len(acc)), "seeds": int(acc.shape[1]) if acc.ndim == 2 else 0,
           "mean": float("nan"), "seed_sd": float("nan"), "arch_sd": float("nan"),
           "seed_spearman": float("nan")}
    if acc.ndim != 2 or len(acc) < 2:
        return out
    out["mean"] = float(acc.mean())
    out["arch_sd"] = float(acc.mean(1).std(ddof=1))
    if acc.shape[1] >= 2:
        out["seed_sd"] = float(acc.std(1, ddof=1).mean())
        rhos = [spearmanr(acc[:, i], acc[:, j]).statistic
                for i in range(acc.shape[1]) for j in range(i + 1, acc.shape[1])]
        out["seed_spearman"] = float(np.mean(rhos))
    return out


def default_path(method: str, preset: str = "quick", root=None) -> Path:
    """``data/tables/METHOD-PRESET.json`` of the repository (the shipped tables live beside
    the package, whatever ``$NAS_TUTORIAL_DATA`` points the datasets to)."""
    folder = Path(root) if root is not None else SHIPPED
    return folder / f"{method}-{preset}.json"


def load(method: str, preset: str = "quick", path=None) -> Table:
    """The shipped table of ``method`` (or the file ``path``)."""
    if method not in METHODS:
        raise TableError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    path = Path(path) if path is not None else default_path(method, preset)
    if not path.is_file():
        raise FileNotFoundError(f"no {method} table at {path}; make it with "
                                f"`nas-tutorial table {method} --preset {preset}`")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TableError(f"{path} is not a table (bad JSON: {e.msg} at line {e.lineno})")
    if d.get("method") != method or "rows" not in d:
        raise TableError(f"{path} is not a {method} table")
    header = {k: v for k, v in d.items() if k not in ("method", "rows", "stats")}
    return Table(method, header, d["rows"])


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
    from .data import resolve_device

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


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()}, {torch.get_num_threads()} thread(s)"


def make(method: str, preset: str = "quick", seeds: int = 2, out=None, resume: bool = False,
         device="cpu", threads: int | None = 1, limit: int | None = None,
         progress: bool = True, parallel: bool = False) -> Table:
    """Train every architecture of ``method``'s table with ``seeds`` seeds and write it.

    Checkpoints ``out`` after every row; ``resume=True`` continues a file made with the
    same protocol and seeds. ``threads`` sets torch's CPU threads for the run (one is the
    fastest for these tiny networks on a shared machine). ``limit`` trains at most ``limit``
    new rows, in order (a partial table, for trying the protocol; resume it later). ``parallel=True`` trains the
    seeds of a row at once, one thread each, where the method allows it (pnas), with the
    same results: on a CPU with a core per seed the table takes half the time.
    """
    from .data import resolve_device
    from .training import progress_bar

    if seeds < 1:
        raise TableError(f"seeds must be at least 1, got {seeds}")
    device = resolve_device(device)
    out = Path(out) if out is not None else default_path(method, preset)
    _check_table_file(out)
    if out.exists() and not resume:
        raise TableError(f"{out} exists; continue it with --resume or name another --out")
    if resume and not out.is_file():
        raise TableError(f"nothing to resume at {out}")
    old_threads = torch.get_num_threads()
    if parallel:
        threads = 1  # one thread per training, so the seeds run side by side
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        s = spec(method, preset, device)
        header = {"preset": preset, "protocol": s.protocol, "note": s.note,
                  "seeds": list(range(seeds)), "device": _device_label(device),
                  "torch": torch.__version__, "created": time.strftime("%Y-%m-%d"),
                  "wall_s": 0.0}
        done = {}
        if resume:
            old = load(method, preset, out)
            if json.loads(json.dumps(s.protocol)) != old.header.get("protocol") or \
                    old.seeds != header["seeds"]:
                raise TableError(f"{out} was made with another protocol or other seeds; "
                                 f"start a new file with --out")
            if (old.header.get("torch"), old.header.get("device")) != (header["torch"],
                                                                        header["device"]):
                raise TableError(f"{out} was made with torch {old.header.get('torch')} on "
                                 f"{old.header.get('device')}; resume it there, or start a "
                                 f"new file with --out")
            header.update({k: old.header[k] for k in ("created", "wall_s")})
            done = {r["key"]: r for r in old.rows if len(r.get("accuracy", [])) == seeds}
        table = Table(method, header, [])
        new = [r for r in s.rows if r["key"] not in done][:limit]
        bar = progress_bar(len(new) * seeds, f"{method} table", progress)
        for row in s.rows:
            if row["key"] in done:
                table.rows.append(done[row["key"]])
                continue
            if not new or row is not new[0]:
                continue  # beyond --limit: left for a later --resume
            new.pop(0)
            t0 = time.perf_counter()
            params, flops = s.measure(row["arch"])
            if parallel and s.train_seeds is not None and seeds > 1:
                accs = [round(float(a), 6) for a in s.train_seeds(row["arch"], range(seeds))]
                bar.update(seeds)
            else:
                accs = []
                for seed in range(seeds):
                    accs.append(round(float(s.train(row["arch"], seed)), 6))
                    bar.update(1)
            seconds = time.perf_counter() - t0
            table.rows.append({**row, "params": int(params), "flops": int(flops),
                               "accuracy": accs, "seconds": round(seconds, 2)})
            table.header["wall_s"] = round(table.header["wall_s"] + seconds, 1)
            table._index = {r["key"]: r for r in table.rows}
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(out, table.to_dict())
            bar.set_postfix(acc=f"{np.mean(accs):.3f}")
        bar.close()
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, table.to_dict())
        return table
    finally:
        torch.set_num_threads(old_threads)


def _check_table_file(out: Path) -> None:
    """A table file ``out`` must be writable before hours of training: not a folder, not
    under a file, in a folder that exists or can be made and can be written."""
    import os

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


def cli_table(method, preset="quick", seeds=2, out=None, resume=False, threads=None,
              limit=None, parallel=False, device="cpu") -> dict:
    """``nas-tutorial table METHOD``: make (or resume) a table and print its summary."""
    name = preset or "quick"
    table = make(method, name, seeds, out, resume, device=device, threads=threads,
                 limit=limit, parallel=parallel)
    return {"table": table, "path": Path(out) if out else default_path(method, name)}


__all__ = ["METHODS", "Spec", "Table", "TableError", "spec", "summarize", "load", "make",
           "retrain", "check_protocol", "default_path", "cli_table"]
