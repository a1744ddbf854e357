"""Exercises that check themselves: every check says one line (never a traceback) for a
stub and a wrong answer, the teacher notebooks' solutions pass, and the student copies hold
stubs instead of solutions."""
import contextlib
import io
import json
import re
from pathlib import Path

import nbformat
import pytest
import torch

import nas_tutorial as nt
from nas_tutorial import exercises, pnas

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[1-5]_*.ipynb"))


def _solution_cells(path):
    nb = nbformat.read(path, 4)
    return [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("solution")]


def _run_cell(source):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<exercise>", "exec"), {"nt": nt, "torch": torch, "pnas": pnas})
    return out.getvalue()


def _stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_stub_and_wrong_answers_get_one_line(name, capsys):
    assert not exercises.check(name, _stub)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"✗ {name}: not written yet")
    for wrong in (lambda *a: None, lambda *a: 0, lambda *a: (_ for _ in ()).throw(ValueError("x"))):
        assert not exercises.check(name, wrong)
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and out.startswith(f"✗ {name}: ")
        assert out.lower().count("hint:") == 1, out  # one hint per failure


def test_unknown_exercise_and_non_function_are_one_line(capsys):
    assert not exercises.check("99.nothing", len)
    assert not exercises.check("03.channel_shuffle", 3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "no exercise" in lines[0] and "pass your function" in lines[1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_teacher_notebook_solutions_pass_their_checks(path):
    cells = [c for c in _solution_cells(path) if c.cell_type == "code"]
    names = [re.search(r'check\("([^"]+)"', c.source).group(1) for c in cells]
    assert len(cells) >= 2 and all(n.startswith(path.name[:2] + ".") for n in names)
    for cell, name in zip(cells, names):
        out = _run_cell(cell.source)
        assert out.startswith(f"✓ {name}: passed"), out
    answers = [c for c in _solution_cells(path) if c.cell_type == "markdown"]
    assert len(answers) == 1 and "### BEGIN SOLUTION" in answers[0].source


def test_every_exercise_is_in_a_notebook():
    used = {re.search(r'check\("([^"]+)"', c.source).group(1)
            for p in NOTEBOOKS for c in _solution_cells(p) if c.cell_type == "code"}
    assert used == set(exercises.EXERCISES)


def test_student_copies_hold_stubs_that_fail_in_one_line(tmp_path):
    pytest.importorskip("nbgrader")
    written = exercises.make_student_copies(ROOT / "notebooks", tmp_path)
    assert len(written) == len(list((ROOT / "notebooks").glob("*.ipynb")))
    for path in written:
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        cells = _solution_cells(path)
        teacher = [c for c in _solution_cells(ROOT / "notebooks" / path.name)
                   if c.cell_type == "code"]
        assert len(cells) == len(teacher), path.name  # every exercise kept, as a stub
        # issue 28: no teacher-only text - model answers and the markers' instruction go
        assert "Model answers" not in text and "YOUR ANSWER HERE" not in text
        assert "between the markers" not in text
        for cell in cells:
            assert cell.cell_type == "code", path.name
            assert exercises.STUB in cell.source and cell.outputs == []
            out = _run_cell(cell.source)  # the stub must not raise out of the cell
            assert out.count("\n") == 1 and "not written yet" in out, out
    json.loads((tmp_path / NOTEBOOKS[0].name).read_text())  # valid notebooks


def test_a_passed_check_is_true_and_shows_nothing_as_a_cell_value(capsys):
    result = exercises.check("01.darts_cell_count", lambda n, s: exercises.darts_cell_count(n, s))
    assert result and repr(result) == "passed"
    assert capsys.readouterr().out.startswith("✓ 01.darts_cell_count: passed")
    # In the executed notebooks an exercise cell shows its one line and nothing else.
    for path in NOTEBOOKS:
        for cell in _solution_cells(path):
            if cell.cell_type == "code":
                assert [o["output_type"] for o in cell.outputs] == ["stream"], path.name


def test_nan_or_inf_never_passes(capsys):
    nan = float("nan")
    assert not exercises.check("03.channel_shuffle", lambda x, g: torch.full_like(x, nan))
    assert not exercises.check("03.node_softmax", lambda b, s: torch.full_like(b, float("inf")))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("✗") and "element" in line for line in out)


# -- issue 28: checks that test the behaviour the exercise names ------------------------------
def _one_point(a, b, rng):
    cut = rng.randrange(len(a) + 1)
    return tuple(a[:cut]) + tuple(b[cut:])


def _global_random(a, b, rng):
    import random

    return tuple(random.choice((x, y)) for x, y in zip(a, b))


def _uniform(a, b, rng):
    return tuple(rng.choice((x, y)) for x, y in zip(a, b))


@pytest.mark.parametrize("fn, words", [
    (_one_point, "neighbouring genes came from the same parent"),
    (_global_random, "the same rng gave two different children"),
])
def test_crossover_refuses_one_point_and_the_global_random(fn, words, capsys):
    assert not exercises.check("04.crossover", fn)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and words in out and out.lower().count("hint:") == 1
    assert exercises.check("04.crossover", _uniform)


def test_the_librarys_own_function_is_not_an_answer(capsys):
    from nas_tutorial.ops import channel_shuffle

    assert not exercises.check("03.channel_shuffle", channel_shuffle)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "the library's own nas_tutorial.ops.channel_shuffle" in out
