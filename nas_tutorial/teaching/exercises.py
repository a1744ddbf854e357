"""Exercises that check themselves: ``check("03.channel_shuffle", your_function)``.

Each exercise is the key step of a paper in a few lines. :func:`check` runs the learner's
function against the library's own implementation on several inputs (edge cases included)
and prints one line: passed, or the first difference (which input, what was expected, a
hint). An exception inside the learner's code is reported in that line too, never as a
traceback from inside the checker. The papers' sections are named in each exercise's hint.

``nt.exercises.list_exercises()`` prints them all; ``make student`` (``python -m
nas_tutorial.exercises notebooks student``) writes the learners' copies of the notebooks.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass

import torch
from torch import nn

from ..methods import pc_darts, pnas, spos
from ..genotypes import GENOTYPES
from ..network import count_params
from ..ops import OPS, PNAS_OPS
from ..run import compare


@dataclass(frozen=True)
class Exercise:
    name: str
    task: str      # what to write, one line
    hint: str      # where to look (paper section, library function to compare with)
    run: object    # run(fn) -> None or a string describing the first failure
    cases: int     # how many inputs the check tries


class _Failure(Exception):
    pass


def _fmt(x, limit=60) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    text = repr(x)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _equal(got, want, where: str):
    if got != want:
        raise _Failure(f"{where}: got {_fmt(got)}, expected {_fmt(want)}")


def _tensor_equal(got, want, where: str, atol=1e-6):
    if not isinstance(got, torch.Tensor):
        raise _Failure(f"{where}: returned {type(got).__name__}, expected a tensor")
    if tuple(got.shape) != tuple(want.shape):
        raise _Failure(f"{where}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if not torch.isfinite(got).all():
        idx = tuple(int(i) for i in (~torch.isfinite(got)).nonzero()[0])
        raise _Failure(f"{where}: element {list(idx)} is {got[idx].item()}, expected "
                       f"{want[idx].item():.4g}")
    diff = (got.detach().float() - want.detach().float()).abs()
    if not diff.max() <= atol:
        idx = tuple(int(i) for i in (diff == diff.max()).nonzero()[0])
        raise _Failure(f"{where}: element {list(idx)} is {got[idx].item():.4g}, expected "
                       f"{want[idx].item():.4g}")


# -- 01: the search space -------------------------------------------------------------------
def darts_cell_count(n_ops: int, steps: int) -> int:
    """DARTS cells (DARTS Sec. 2.1 and 2.4): intermediate node i keeps 2 edges from distinct
    predecessors among the 2 + i before it, each with one of ``n_ops`` operations."""
    return math.prod(math.comb(2 + i, 2) * n_ops ** 2 for i in range(steps))


def _run_darts_cell_count(fn):
    for n_ops, steps in ((7, 4), (1, 1), (2, 1), (8, 4), (3, 2), (7, 5)):
        _equal(fn(n_ops, steps), darts_cell_count(n_ops, steps),
               f"n_ops={n_ops}, steps={steps}")


def _run_sep_conv_params(fn):

    for C in (1, 4, 16, 36):
        _equal(fn(C), count_params(OPS["sep_conv_3x3"](C, 1, True)), f"C={C}")


# -- 02: PNAS ------------------------------------------------------------------------------
def _run_one_block_count(fn):

    for n in (1, 2, 3, 5, 8):
        _equal(fn(n), len(pnas.one_block_cells(PNAS_OPS[:n])), f"n_ops={n}")


def _run_expand(fn):

    two = ("sep_conv_3x3", "max_pool_3x3")
    three = two + ("identity",)
    cells = [pnas.one_block_cells(two)[0], pnas.one_block_cells(three)[4],
             pnas.expand(pnas.one_block_cells(two)[3], two)[7]]
    for cell, ops in zip(cells, (two, three, two)):
        got = fn(cell, ops)
        want = pnas.expand(cell, ops)
        where = f"cell {pnas.cell_key(cell)!r}, ops {list(ops)}"
        if not isinstance(got, (list, tuple, set)):
            raise _Failure(f"{where}: returned {type(got).__name__}, expected a list of cells")
        got = [pnas.canonical(c) for c in got]
        if len(set(got)) != len(got):
            raise _Failure(f"{where}: {len(got) - len(set(got))} duplicates (hint: make each "
                           f"child canonical with pnas.canonical and keep each once)")
        missing, extra = set(want) - set(got), set(got) - set(want)
        if missing:
            raise _Failure(f"{where}: {len(missing)} children missing, e.g. "
                           f"{pnas.cell_key(next(iter(missing)))!r}")
        if extra:
            raise _Failure(f"{where}: {len(extra)} children that are not one block more, e.g. "
                           f"{pnas.cell_key(next(iter(extra)))!r}")


# -- 03: PC-DARTS --------------------------------------------------------------------------
def _run_channel_shuffle(fn):

    g = torch.Generator().manual_seed(0)
    for shape, groups in (((2, 8, 3, 3), 4), ((1, 8, 1, 1), 2), ((2, 12, 2, 2), 3),
                          ((1, 4, 2, 2), 1), ((3, 16, 4, 4), 8)):
        x = torch.arange(math.prod(shape), dtype=torch.float32).view(shape) + \
            torch.rand(shape, generator=g)
        _tensor_equal(fn(x.clone(), groups), pc_darts.channel_shuffle(x, groups),
                      f"x of shape {shape}, groups={groups}")


def _run_node_softmax(fn):

    g = torch.Generator().manual_seed(1)
    for steps in (1, 2, 4, 5):
        n = sum(2 + i for i in range(steps))
        beta = torch.randn(n, generator=g) * 3
        _tensor_equal(fn(beta.clone(), steps), pc_darts.node_softmax(beta, steps),
                      f"beta of {n} edges, steps={steps}", atol=1e-5)


# -- 04: SPOS ------------------------------------------------------------------------------
def _run_crossover(fn):
    rng = random.Random(0)
    for length, choices in ((20, 4), (1, 4), (8, 2)):
        a = tuple(rng.randrange(choices) for _ in range(length))
        b = tuple((x + 1) % choices for x in a)  # differs from a in every gene
        seen = [set() for _ in range(length)]
        for trial in range(200):
            child = fn(a, b, random.Random(trial))
            where = f"parents of {length} genes"
            if not isinstance(child, tuple) or len(child) != length:
                raise _Failure(f"{where}: returned {_fmt(child)}, expected a tuple of {length}")
            for k, (c, x, y) in enumerate(zip(child, a, b)):
                if c not in (x, y):
                    raise _Failure(f"{where}: gene {k} is {c}, from neither parent ({x}, {y})")
                seen[k].add(c)
        lazy = [k for k, s in enumerate(seen) if len(s) < 2]
        if lazy:
            raise _Failure(f"parents of {length} genes: gene {lazy[0]} always came from the "
                           f"same parent in 200 children (hint: draw each gene's parent at "
                           f"random, independently)")
    # Uniform crossover: each gene's parent is a fair coin, independent of its neighbour's.
    # A one-point (or two-point) crossover passes every check above; here neighbours come
    # from the same parent in about 95% of pairs instead of 50%.
    a, b = (0,) * 20, (1,) * 20
    children = [fn(a, b, random.Random(1000 + t)) for t in range(400)]
    from_a = sum(c == 0 for child in children for c in child) / (400 * 20)
    same = sum(x == y for child in children for x, y in zip(child, child[1:])) / (400 * 19)
    if not 0.4 < from_a < 0.6:
        raise _Failure(f"400 children of 20 genes took {from_a:.0%} of their genes from the "
                       f"first parent, expected about 50% (hint: each parent with "
                       f"probability 1/2)")
    if not 0.4 < same < 0.6:
        raise _Failure(f"neighbouring genes came from the same parent in {same:.0%} of pairs, "
                       f"expected about 50% (hint: draw every gene's parent on its own, not "
                       f"one cut point)")
    # the given rng decides: the same rng state gives the same child, whatever the global
    # random module has done meanwhile
    state = random.getstate()
    try:
        random.seed(1)
        first = fn(a, b, random.Random(7))
        random.seed(2)
        if fn(a, b, random.Random(7)) != first:
            raise _Failure("the same rng gave two different children (hint: draw from the "
                           "rng you are given, not from the global random module)")
    finally:
        random.setstate(state)


def _run_recalibrate(fn):

    with torch.random.fork_rng():  # the learner's own random state stays as it was
        torch.manual_seed(0)
        # the library's own (SPOS Sec. 3.4), for plain models too
        _recalibrate_cases(fn, spos.recalibrate_bn)


def _recalibrate_cases(fn, recalibrate_bn):
    for n_batches in (1, 3, 5):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
        with torch.no_grad():  # stale statistics, as after supernet training
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.fill_(5.0)
                    m.running_var.fill_(9.0)
        batches = [torch.randn(8, 3, 6, 6) * 2 + 1 for _ in range(n_batches)]
        mine, ref = copy.deepcopy(model), copy.deepcopy(model)
        fn(mine, [x.clone() for x in batches])
        with torch.no_grad():
            recalibrate_bn(ref, None, batches)
        where = f"{n_batches} batch(es)"
        if mine.training:
            raise _Failure(f"{where}: the model is still in train mode (hint: end with eval())")
        for k, (a, b) in enumerate(zip(mine.modules(), ref.modules())):
            if isinstance(a, nn.BatchNorm2d):
                _tensor_equal(a.running_mean, b.running_mean, f"{where}, BN {k} running_mean",
                              atol=1e-4)
                _tensor_equal(a.running_var, b.running_var, f"{where}, BN {k} running_var",
                              atol=1e-4)
                _equal(a.momentum, b.momentum, f"{where}, BN {k} momentum afterwards")


# -- 05: comparing searches ----------------------------------------------------------------
def _run_genotype_agreement(fn):

    pairs = [(GENOTYPES["PC_DARTS"], GENOTYPES["PC_DARTS"]),
             (GENOTYPES["DARTS_V1"], GENOTYPES["DARTS_V2"]),
             (GENOTYPES["PC_DARTS"], GENOTYPES["DARTS_V2"])]
    pairs += [(compare.random_genotype(s), compare.random_genotype(s + 10)) for s in range(3)]
    for a, b in pairs:
        got, want = fn(a, b), compare.genotype_agreement(a, b)
        where = f"{_fmt(a.normal[:2], 40)}... vs {_fmt(b.normal[:2], 40)}..."
        if not isinstance(got, dict):
            raise _Failure(f"{where}: returned {type(got).__name__}, expected a dict")
        for key in ("edges", "ops", "total"):
            _equal(got.get(key), want[key], f"{where}, {key!r}")


def _run_spearman(fn):
    from scipy.stats import spearmanr

    rng = random.Random(3)
    cases = [([1, 2, 3, 4], [10, 20, 30, 40]), ([1, 2, 3, 4], [4, 3, 2, 1]),
             ([0.5, 0.7, 0.6], [0.1, 0.3, 0.2]), ([1, 2, 2, 3], [1, 3, 2, 4]),
             ([rng.random() for _ in range(30)], [rng.random() for _ in range(30)])]
    for x, y in cases:
        got = fn(list(x), list(y))
        want = float(spearmanr(x, y).statistic)
        where = f"x={_fmt(x, 40)}, y={_fmt(y, 40)}"
        if not isinstance(got, (int, float)) or not abs(float(got) - want) < 1e-6:
            raise _Failure(f"{where}: got {_fmt(got)}, expected {want:.6f}" + (
                " (hint: tied values share the mean of their ranks)"
                if len(set(x)) < len(x) else ""))


EXERCISES = {e.name: e for e in (
    Exercise("01.darts_cell_count", "darts_cell_count(n_ops, steps): how many DARTS cells",
             "DARTS Sec. 2.4: node i keeps 2 of its 2 + i inputs, each with one op",
             _run_darts_cell_count, 6),
    Exercise("01.sep_conv_params", "sep_conv_params(C): parameters of sep_conv_3x3 at C channels",
             "DARTS's sep_conv is two stacked (ReLU, depthwise 3x3, pointwise 1x1, BN); "
             "compare with nt.count_params(nt.OPS['sep_conv_3x3'](C, 1, True))",
             _run_sep_conv_params, 4),
    Exercise("02.one_block_count", "one_block_count(n_ops): one-block PNAS cells",
             "PNAS Sec. 3.1: a block is an unordered pair of (input, op), repeats allowed",
             _run_one_block_count, 5),
    Exercise("02.expand", "expand(cell, ops): every cell with one more block",
             "PNAS Sec. 4.1: the new block reads any of the 2 + b inputs; pnas.canonical "
             "merges cells written in another order", _run_expand, 3),
    Exercise("03.channel_shuffle", "channel_shuffle(x, groups)",
             "PC-DARTS Sec. 3.2 (ShuffleNet's shuffle): view, transpose, flatten",
             _run_channel_shuffle, 5),
    Exercise("03.node_softmax", "node_softmax(beta, steps): edge normalization",
             "PC-DARTS Sec. 3.3: a softmax over the edges into each node, not over all",
             _run_node_softmax, 4),
    Exercise("04.crossover", "crossover(a, b, rng): a child path from two parents",
             "SPOS Sec. 3.4 (official get_crossover): each gene from either parent",
             _run_crossover, 3),
    Exercise("04.recalibrate", "recalibrate(model, batches): BN recalibration",
             "SPOS Sec. 3.4: reset the running statistics, momentum 1/(k+1) averages them "
             "exactly; forward in train mode, then eval", _run_recalibrate, 3),
    Exercise("05.genotype_agreement", "genotype_agreement(a, b): shared edges and ops",
             "per node of both cells, count (input) and (op, input) matches as multisets "
             "(collections.Counter's &); total = pairs of the larger genotype",
             _run_genotype_agreement, 6),
    Exercise("05.spearman", "spearman(x, y): Spearman's rank correlation",
             "rank both lists (ties get the mean of their ranks), then Pearson's correlation "
             "of the ranks; every table and predictor in these notebooks is judged by it",
             _run_spearman, 5),
)}


class Result:
    """What :func:`check` returns: true when the exercise passed. Shows nothing as a cell's
    last value (the one line printed by ``check`` says it all)."""

    def __init__(self, passed: bool):
        self.passed = passed

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return "passed" if self.passed else "not passed"

    def _ipython_display_(self):
        pass


def check(name: str, fn) -> Result:
    """Run exercise ``name`` on ``fn``; print one line; a true :class:`Result` if it passed."""
    ex = EXERCISES.get(name)
    if ex is None:
        print(f"no exercise {name!r}; there are: {', '.join(EXERCISES)}")
        return Result(False)
    if not callable(fn):
        print(f"✗ {name}: pass your function itself, not {_fmt(fn)}")
        return Result(False)
    if str(getattr(fn, "__module__", "") or "").startswith("nas_tutorial"):
        print(f"✗ {name}: that is the library's own {fn.__module__}.{fn.__qualname__}; write "
              f"your own function")
        return Result(False)
    try:
        ex.run(fn)
    except NotImplementedError:
        print(f"✗ {name}: not written yet (replace `raise NotImplementedError` with your code)")
        return Result(False)
    except _Failure as e:
        hint = "" if "(hint:" in str(e) else f". Hint: {ex.hint}"  # one hint per failure
        print(f"✗ {name}: {e}{hint}")
        return Result(False)
    except Exception as e:  # the learner's code raised: say where, not a traceback
        print(f"✗ {name}: your function raised {type(e).__name__}: {str(e)[:120]}. Hint: {ex.hint}")
        return Result(False)
    print(f"✓ {name}: passed on {ex.cases} inputs")
    return Result(True)


STUB = 'raise NotImplementedError("write your solution here")'
MARKER_TEXT = "Write the few lines between the markers, then run the cell"
STUDENT_TEXT = ("Replace the line `raise NotImplementedError(...)` with your few lines, then "
                "run the cell")


def make_student_copies(src="notebooks", out="student") -> list:
    """Copies of the notebooks for learners: every solution region (between nbgrader's
    ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers, in cells nbgrader marks as
    solutions) replaced by a stub, with nbgrader's own ``ClearSolutions`` preprocessor; the
    outputs of those cells are cleared. Returns the paths written."""
    from pathlib import Path

    import nbformat
    from nbgrader.preprocessors import ClearSolutions

    clear = ClearSolutions(code_stub={"python": STUB},
                           text_stub="YOUR ANSWER HERE")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(Path(src).glob("*.ipynb")):
        nb = nbformat.read(path, 4)
        nb.metadata.setdefault("kernelspec", {"name": "python3", "language": "python",
                                              "display_name": "Python 3"})
        for cell in nb.cells:
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution") and \
                    cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        # teacher-only text goes: model answers (markdown solution cells) as a whole, and
        # the instruction that names the markers the copy no longer has
        nb.cells = [c for c in nb.cells if not (
            c.cell_type == "markdown"
            and c.get("metadata", {}).get("nbgrader", {}).get("solution"))]
        nb, _ = clear.preprocess(nb, {})
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = cell.source.replace(MARKER_TEXT, STUDENT_TEXT)
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


def list_exercises() -> None:
    """Print every exercise: name, what to write."""
    for ex in EXERCISES.values():
        print(f"{ex.name:<24} {ex.task}")


__all__ = ["EXERCISES", "Exercise", "check", "list_exercises", "make_student_copies",
           "darts_cell_count"]

