"""Ground-truth tables as data: read them, look architectures up, measure their noise.

A table (``data/tables/METHOD-PRESET.json``, made by :mod:`nas_tutorial.run.tables`) holds
architectures of one method's space trained stand-alone with one protocol and several
seeds, like NAS-Bench-101/201 (Ying et al. 2019; Dong & Yang 2020) in miniature. This
module only reads them, so a method can take a table as its oracle or its truth without
importing the code that trains tables (which imports the methods).

Seed ``s`` of a row is the method's training with run seed ``s``; a search with seed ``s``
reads seed ``s mod n`` and is judged by the mean over the table's seeds.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

METHODS = ("pnas", "spos", "pc-darts")
# The shipped tables live beside the package, whatever $NAS_TUTORIAL_DATA points the
# datasets to.
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "tables"


class TableError(ValueError):
    """A table that cannot be made, resumed or read as asked; the message is one line."""


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

    @property
    def device_type(self) -> str:
        """``cuda`` where a GPU trained rows of the table, else ``cpu``: a cell placed among
        the rows is trained on the same kind of device, with the same numerics. Tables made
        before machines were recorded name the device only in the header's label."""
        machines = self.header.get("machines") or []
        if machines:
            return "cuda" if any("gpu" in m for m in machines) else "cpu"
        return "cpu" if str(self.header.get("device", "CPU")).startswith("CPU") else "cuda"

    def row(self, key: str) -> dict:
        """The row of ``key`` as the table reads: the header's seeds only (a table being
        extended holds more in some rows until every row has them)."""
        if key not in self._index:
            raise KeyError(f"{key!r} is not in the {self.method} table")
        row, n = self._index[key], len(self.seeds)
        if len(row.get("accuracy", [])) <= n:
            return row
        return {**row, "accuracy": row["accuracy"][:n],
                **({"machine": row["machine"][:n]} if "machine" in row else {})}

    def accuracy(self, key: str, seed: int | None = None) -> float:
        """The recorded accuracy of ``key`` for run seed ``seed`` (a search with seed s
        reads the table's seed ``s mod n_seeds``), or the mean over seeds when None: the
        truth a search is judged by. Seeds of a row beyond the header's (an extension
        under way) are not read until every row has them."""
        acc = self.row(key)["accuracy"]
        return float(np.mean(acc)) if seed is None else float(acc[seed % len(acc)])

    def machine(self, key: str, seed: int) -> str | None:
        """The fingerprint (:func:`nas_tutorial.devices.machine`) of the machine that
        trained seed ``seed`` of ``key``; None where the table does not know (made before
        tables recorded it)."""
        machines = self.header.get("machines") or [{}]
        index = self.row(key).get("machine") or [0] * len(self.row(key)["accuracy"])
        return machines[index[seed]].get("fingerprint") if seed < len(index) else None

    def trainings(self, group: str = "random") -> np.ndarray:
        """Every single training of the ``group``'s complete rows (all seeds of all rows):
        the distribution one more training of a new architecture is placed in."""
        rows = [r for r in self.complete() if r["group"] == group]
        if not rows:
            raise TableError(f"the {self.method} table has no complete '{group}' rows")
        n = len(self.seeds)
        return np.array([a for r in rows for a in r["accuracy"][:n]], dtype=float)

    def percentile(self, accuracy: float, group: str = "random") -> float:
        """Where one training's ``accuracy`` falls among the ``group``'s trainings: the
        percentage of them below it, ties counted half (50 = the group's median). One
        training is set against single trainings, so both sides carry the seed noise."""
        ref = self.trainings(group)
        below = (ref < accuracy).sum() + 0.5 * (ref == accuracy).sum()
        return float(100.0 * below / len(ref))

    def percentile_of_means(self, accuracy: float, group: str = "random") -> float:
        """Where ``accuracy`` falls among the ``group``'s architectures judged by their truth
        (each row's mean over the table's seeds): the percentage of them below it, ties
        counted half."""
        n = len(self.seeds)
        rows = [r for r in self.complete() if r["group"] == group]
        if not rows:
            raise TableError(f"the {self.method} table has no complete '{group}' rows")
        means = np.array([np.mean(r["accuracy"][:n]) for r in rows])
        below = (means < accuracy).sum() + 0.5 * (means == accuracy).sum()
        return float(100.0 * below / len(means))

    def __contains__(self, key) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self.rows)

    def complete(self, seeds: int | None = None) -> list:
        """Rows with an accuracy for each of the first ``seeds`` seeds (default: the
        header's seeds)."""
        n = len(self.seeds) if seeds is None else seeds
        return [r for r in self.rows if len(r.get("accuracy", [])) >= n]

    def groups(self) -> dict:
        out = {}
        for r in self.rows:
            out.setdefault(r["group"], []).append(r)
        return out

    def stats(self, seeds: int | None = None, groups=None) -> dict:
        """:func:`summarize` over the complete rows (of ``groups`` only, where given), with
        their first ``seeds`` seeds (default the header's; more reads an extension under
        way over the rows that have them)."""
        n = len(self.seeds) if seeds is None else seeds
        rows = [{"accuracy": r["accuracy"][:n]} for r in self.complete(n)
                if groups is None or r["group"] in groups]
        return summarize(rows)

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
    the architectures as another would). With four seeds or more also ``split_half``, the
    Spearman correlation of the mean of the first half of the seeds with the mean of the
    second (an odd last seed left out), and ``reliability``, the Spearman-Brown estimate for the mean of both halves."""
    from scipy.stats import spearmanr

    # the seeds every row has (a table being extended has more in some rows)
    n = min((len(r["accuracy"]) for r in rows), default=0)
    acc = np.array([r["accuracy"][:n] for r in rows], dtype=float)  # (archs, seeds)
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
    if acc.shape[1] >= 4:
        # Split-half reliability: how well the mean of seeds 0-1 ranks the architectures as
        # the mean of seeds 2-3 does; Spearman-Brown's 2r / (1 + r) then estimates the
        # reliability of the mean of all four (the truth searches are judged by).
        h = acc.shape[1] // 2
        r = float(spearmanr(acc[:, :h].mean(1), acc[:, h:2 * h].mean(1)).statistic)
        out["split_half"] = r
        out["reliability"] = 2 * r / (1 + r) if r > -1 else float("nan")
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
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TableError(f"{path} is not a table (bad JSON: {e.msg}, line {e.lineno} column {e.colno})")
    except UnicodeDecodeError:
        raise TableError(f"{path} is not a table (not UTF-8 text)") from None
    if not _is_table(d, method):
        raise TableError(f"{path} is not a {method} table; name a table file, or make one "
                         f"with `nas-tutorial table {method} --out {path.name}`")
    header = {k: v for k, v in d.items() if k not in ("method", "rows", "stats")}
    return Table(method, header, d["rows"])


def _is_table(d, method: str) -> bool:
    """A table's layout: the method, a header with its seeds, rows with a key, an
    architecture and a list of accuracies."""
    if not isinstance(d, dict) or d.get("method") != method or not isinstance(d.get("rows"), list):
        return False
    if not isinstance(d.get("seeds", []), list):
        return False
    return all(isinstance(r, dict) and isinstance(r.get("key"), str) and "arch" in r
               and isinstance(r.get("accuracy", []), list)
               and all(isinstance(a, (int, float)) for a in r.get("accuracy", []))
               for r in d["rows"])


def find(method: str, protocol: dict, tables=None):
    """The table whose recorded protocol is ``protocol`` (among ``tables``, default every
    shipped table of ``method``), or None: a table answers for a search only when its rows
    were trained the way that search trains."""
    want = json.loads(json.dumps(protocol))  # tuples as lists, as read back from disk
    if tables is None:
        tables = [load(method, path=p) for p in sorted(SHIPPED.glob(f"{method}-*.json"))]
    return next((t for t in tables if t.header.get("protocol") == want), None)


def ranking_ceiling(table, bootstrap: int = 2000, seed: int = 0) -> dict:
    """How well could any ranker agree with this table? Its paths' stand-alone accuracies
    hold two parts, the path's true accuracy and the noise of one training (seed to seed).
    From the table's own seeds: ``seed_tau``, Kendall tau of one seed's accuracies against
    another's; ``reliability``, the share of the variance of the seed-mean accuracies that
    is true differences (between-path variance minus within-path variance / seeds, over the
    between-path variance, clamped at 0); ``tau_max``, the tau a perfect ranker would expect
    against the seed means, 2/pi asin(sqrt(reliability)) (Greiner's relation for normal
    scores); ``tau_max_upper``, the 95th percentile of ``tau_max`` over ``bootstrap``
    resamples of the paths (the estimate from a few seeds is itself uncertain)."""
    from scipy.stats import kendalltau

    n = len(table.seeds)  # an extension under way reads as the table did before it
    acc = np.array([r["accuracy"][:n] for r in table.complete()], dtype=float)

    def parts(a):
        within = a.var(1, ddof=1).mean() if n > 1 else float("nan")
        between = a.mean(1).var(ddof=1)
        true = max(between - within / n, 0.0)
        rel = true / between if between > 0 else float("nan")
        return within, true, rel, 2 / math.pi * math.asin(math.sqrt(rel))

    within, true, rel, tau_max = parts(acc)
    rng = np.random.default_rng(seed)
    boots = [parts(acc[rng.integers(0, len(acc), len(acc))])[3] for _ in range(bootstrap)]
    taus = [kendalltau(acc[:, i], acc[:, j])[0] for i in range(n) for j in range(i + 1, n)]
    return {"seed_tau": float(np.mean(taus)) if taus else float("nan"),
            "seed_sd": float(within) ** 0.5, "path_sd": float(true) ** 0.5,
            "reliability": float(rel), "tau_max": float(tau_max),
            "tau_max_upper": float(np.nanpercentile(boots, 95))}
