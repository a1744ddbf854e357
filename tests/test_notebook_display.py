"""What a reader sees without a kernel: saved notebooks hold no frozen bars, no widgets
printed as text, no nbval comments; every figure and drawing has a static copy; the HTML
export shows a picture for each; `make test` runs the notebooks on the quick preset."""
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from nas_tutorial import handouts

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_reads_well_without_a_kernel(path):
    nb = nbformat.read(path, 4)
    assert handouts.problems(nb) == []
    assert path.stat().st_size < 2.5e6  # static copies, but no bloat
    assert handouts.figure_outputs(nb) > 0


@pytest.mark.parametrize("path", NOTEBOOKS[2:3], ids=lambda p: p.name)
def test_html_export_holds_a_picture_for_every_figure(path, tmp_path):
    nb = nbformat.read(path, 4)
    html = handouts.export(path, tmp_path).read_text(encoding="utf-8")
    pictures = len(re.findall(r"<img[^>]+src=\"data:image/(?:png|svg)", html)) + \
        html.count("<svg ")
    assert pictures >= handouts.figure_outputs(nb) > 5


def _run(tmp_path, cells, timeout=180):
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def test_progress_bars_controls_and_drawings_save_as_readers_see_them(tmp_path):
    nb = _run(tmp_path, [
        "import nas_tutorial as nt\nnt.notebook.setup(static=False)",
        "from nas_tutorial.training import progress_bar\nbar = progress_bar(30, 'demo')\n"
        "for _ in range(30):\n    bar.update(1)\nbar.set_postfix(acc=0.5)\nbar.close()",
        "import ipywidgets as W\n"
        "nt.notebook.controls(lambda k: (f'k is {k}', nt.viz.draw_genotype(nt.GENOTYPES['PC_DARTS'])),"
        " k=W.IntSlider(value=3, description='k'))",
        "nt.viz.draw_cell(nt.GENOTYPES['DARTS_V2'])",
        "from IPython.display import display\nlive = nt.viz.LivePlot('live')\ndisplay(live)\n"
        "h = nt.History()\nfor e in range(1, 4):\n    h.epoch.append(e); h.train_loss.append(1 / e)\n"
        "    h.train_acc.append(e / 4); h.valid_loss.append(1 / e); h.valid_acc.append(e / 5)\n"
        "    live.update(h)",
    ])
    bar, ctl, drawing, live = (c.outputs for c in nb.cells[1:])
    assert len(live) == 1  # the live plot is replaced in place, not appended per epoch
    assert live[0]["data"]["text/plain"] == "[figure: live]"
    assert len(live[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["x"]) == 3
    assert [o["data"]["text/plain"] for o in bar] == ["demo: 30/30 it in 00:00 (acc=0.5)"]
    assert ctl[0]["data"]["text/plain"] == "[controls: k = 3; run the notebook to use them]"
    assert "application/vnd.jupyter.widget-view+json" in ctl[0]["data"]
    assert ctl[1]["data"]["text/plain"] == "k is 3"
    assert {"image/png", "image/svg+xml"} <= set(ctl[2]["data"]) <= {"image/png", "image/svg+xml", "text/plain"}
    assert {"image/png", "image/svg+xml"} <= set(drawing[0]["data"])
    # static copies were off here: the one plotly figure is the one problem found
    assert handouts.problems(nb) == ["cell 4: application/vnd.plotly.v1+json without a PNG copy"]


def test_plotly_figures_carry_a_png_where_chromium_is_installed(tmp_path):
    pytest.importorskip("kaleido")
    if handouts.browser() is None:
        pytest.skip("no Chromium here (apt-get install chromium)")
    nb = _run(tmp_path, [
        "import nas_tutorial as nt\nnt.notebook.setup(static=True)",
        "import plotly.graph_objects as go\ngo.Figure(go.Bar(x=[1, 2], y=[3, 1]))",
    ])
    data = nb.cells[1].outputs[0]["data"]
    assert data["image/png"].startswith("iVBOR") and "application/vnd.plotly.v1+json" in data
    assert nb.cells[0].outputs == []  # no warning line when the static copies work


def test_make_runs_the_notebooks_on_quick_whatever_the_machine():
    import shutil

    if shutil.which("make") is None:
        pytest.skip("no make here (conda users run pytest directly)")
    out = subprocess.run(["make", "--no-print-directory", "-n", "test", "notebooks"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    nb_lines = [line for line in out.splitlines() if "--nbval" in line]
    assert len(nb_lines) == 2
    assert all("NAS_TUTORIAL_PRESET=quick" in line for line in nb_lines)
    lab = subprocess.run(["make", "--no-print-directory", "-n", "lab"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    shell = next(line for line in lab.splitlines() if "jupyter lab" in line)
    assert "jupyter lab notebooks" in shell and "--allow-root" in shell


def test_one_thread_rule_for_the_notebooks_and_the_cli(monkeypatch):
    import torch

    from nas_tutorial import notebook
    from nas_tutorial.run import cli

    seen = []
    monkeypatch.setattr(cli, "_info", lambda args: seen.append(torch.get_num_threads()) or 0)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert cli.main(["--threads", "2", "info", "DARTS_V2"]) == 0
        assert cli.main(["info", "DARTS_V2"]) == 0
        assert seen == [2, 1]  # the default is one thread, as notebook.setup() sets it
        assert torch.get_num_threads() == 3  # and the caller's count comes back
        torch.set_num_threads(1)
        assert notebook.set_threads(None) == 1  # None keeps what is set
    finally:
        torch.set_num_threads(old)


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    """save_html / save_svg write a temporary file and rename it: a write that fails half
    way leaves the previous figure, not half of one (issue 16)."""
    from nas_tutorial import viz

    class Broken:
        def write_html(self, path, **kw):
            with open(path, "w") as f:
                f.write("<html>half")
            raise KeyboardInterrupt

    target = tmp_path / "curves.html"
    target.write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        viz.save_html(Broken(), target)
    assert target.read_text() == "previous"

    class Graph:
        def pipe(self, format):
            return b"<svg/>"

    monkeypatch.setattr(viz.shared, "has_dot", lambda: True)  # save_svg reads it there
    assert viz.save_svg(Graph(), tmp_path / "cell.svg").read_bytes() == b"<svg/>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.svg", "curves.html",
                                                          "curves.html.tmp"]


def test_a_long_run_is_announced_once_after_its_first_steps(capsys):
    """A run estimated over an hour says so in one line after its first steps (a full
    preset started on a CPU); a short one says nothing."""
    from nas_tutorial.progress import ESTIMATE_AFTER, progress_bar, run_estimate

    assert run_estimate(30.0, 3, 100) is None            # 1,000 s in all
    assert "about 2.8 h" in run_estimate(30.0, 3, 1000)   # 10,000 s
    bar = progress_bar(1000, "search")
    bar.start_t -= 30.0  # as if the first steps had taken 30 s
    bar.update(ESTIMATE_AFTER)
    bar.update(5)
    bar.close()
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("this run will take about") == 1 and "--preset quick" in text
    quiet = progress_bar(1000, "search", enabled=False)
    quiet.update(10)
    assert "this run will take" not in "".join(capsys.readouterr())


def test_a_resumed_or_silent_bar_estimates_from_its_own_steps(capsys):
    from nas_tutorial.progress import progress_bar

    quiet = progress_bar(1000, "search", enabled=False, initial=500)  # a resumed, silent run
    quiet.update(1)
    resumed = progress_bar(1000, "search", initial=900)
    resumed.start_t -= 30.0  # 3 steps in 30 s, 100 left: 1,000 s, no warning
    resumed.update(3)
    resumed.close()
    out = capsys.readouterr()
    assert "this run will take" not in out.out + out.err


def test_the_teachers_handout_marks_model_answers_with_a_small_note(tmp_path):
    """Issue 28: nbgrader's markers in a markdown cell were large headings in the HTML."""
    from nbformat.v4 import new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell("**Model answers (for teachers)**\n\n"
                                               "### BEGIN SOLUTION\n1. An answer.\n"
                                               "### END SOLUTION")])
    src = tmp_path / "answers.ipynb"
    nbformat.write(nb, src)
    html = handouts.export(src, tmp_path / "out").read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in html and "END SOLUTION" not in html
    assert "Teacher's answer" in html and "An answer." in html


class _Handle:
    def __init__(self):
        self.updates = []

    def update(self, obj):
        self.updates.append(obj)


def test_a_redrawn_figure_becomes_a_new_output_not_an_update_in_place(monkeypatch):
    """Issue 30: JupyterLab hands an update with the same mime type to the renderer it has,
    and plotly's ignores it once hovered. Every redraw (controls, LivePlot) first shows a
    plain-text placeholder, so the figure that follows gets a fresh renderer."""
    import IPython.display
    import ipywidgets as W
    import plotly.graph_objects as go

    from nas_tutorial.viz import notebook
    from nas_tutorial.training import History
    from nas_tutorial.viz.shared import LivePlot

    handles = []

    def display(*objs, display_id=None, **kw):
        if display_id:
            handles.append(_Handle())
            return handles[-1]

    monkeypatch.setattr(IPython.display, "display", display)
    slider = W.IntSlider(value=1, min=1, max=3)
    notebook.controls(lambda n: go.Figure(layout_title_text=f"n={n}"), n=slider)
    slider.value = 2
    first, second = handles[0].updates  # the placeholder, then the new figure
    assert isinstance(first, IPython.display.Pretty)
    assert second.obj.layout.title.text == "n=2"  # the figure itself, after the placeholder
    live = LivePlot()
    live._ipython_display_()
    live.update(History(epoch=[1], train_loss=[1.0], train_acc=[0.5], valid_loss=[1.0],
                        valid_acc=[0.5], lr=[0.1], seconds=[1.0]))
    first, second = handles[-1].updates
    assert isinstance(first, IPython.display.Pretty) and second.obj is live.fig


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="no graphviz dot")
def test_drawings_fit_a_1000_px_column():
    """Issue 28/30: PNASNet-5 and the beams ran off a 1,280-px page, and 999-px drawings got
    a scrollbar in JupyterLab's 953-px output column (1,400-px window, file browser open).
    Every drawing is at most 930 px wide (graphviz's size cap; SVG points are 4/3 px)."""
    import nas_tutorial as nt
    from nas_tutorial import spos
    from nas_tutorial.viz import draw_cell, draw_genotype
    from nas_tutorial.viz.spos import draw_path

    drawings = [draw_genotype(g) for g in nt.GENOTYPES.values()]
    drawings += [draw_cell(nt.GENOTYPES["PNASNET_5"], "normal"),
                 draw_path(spos.PUBLISHED_PATH, spos.IMAGENET)]
    for g in drawings:
        svg = g.pipe(format="svg").decode()
        width = float(re.search(r'<svg width="([\d.]+)pt"', svg).group(1)) * 4 / 3
        assert width <= 930, (g.name, width)


def test_handouts_render_their_maths_offline(tmp_path):
    """Issue 28: MathJax came from a CDN, so an offline classroom saw raw TeX. The maths is
    MathML now, and nothing in the handout loads from the network."""
    path = ROOT / "notebooks" / "04_spos.ipynb"
    html = handouts.export(path, tmp_path).read_text(encoding="utf-8")
    assert "cdnjs" not in html and "mathjax" not in html.lower()
    assert html.count("<math") >= 5 and 'display="block"' in html
    assert "$\\tau$" not in html  # the markdown's TeX is gone, as MathML
    assert handouts.offline_math("`$HOME` costs 5$", {}) == "`$HOME` costs 5$"


def test_efficiency_bands_are_the_interval_of_the_mean():
    """Issue 27: efficiency curves carry the 95% interval of the mean over seeds, which holds
    the mean, narrows with more seeds, and is empty when the seeds agree."""
    import numpy as np

    from nas_tutorial.viz.shared import mean_interval

    rng = np.random.default_rng(0)
    few, many = rng.normal(0.7, 0.01, (5, 8)), rng.normal(0.7, 0.01, (80, 8))
    for curves in (few, many):
        mean, lo, hi = mean_interval(curves)
        assert (lo <= mean).all() and (mean <= hi).all()
    width = lambda c: np.mean(mean_interval(c)[2] - mean_interval(c)[1])  # noqa: E731
    assert width(many) < width(few) / 2
    same = np.tile(np.linspace(0.5, 0.7, 8), (6, 1))
    mean, lo, hi = mean_interval(same)
    assert np.allclose(lo, mean) and np.allclose(hi, mean)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_handout_fits_the_page_offline_without_markers(path, tmp_path):
    """Issue 28: each notebook's teacher handout, as `make html` writes it: no picture wider
    than the handout (1,000 px), no plotly figure whose titles, subplot titles and legend
    collide at the figures' 700 px, no solution marker, nothing loaded from a CDN."""
    nb = nbformat.read(path, 4)
    assert handouts.figure_problems(nb) == []
    html = handouts.export(path, tmp_path).read_text(encoding="utf-8")
    assert handouts.wide_pictures(html) == []
    assert "BEGIN SOLUTION" not in html and "END SOLUTION" not in html
    for cdn in ("cdnjs", "jsdelivr", "unpkg", "mathjax"):
        assert cdn not in html.lower(), cdn


def test_the_layout_check_finds_what_collides():
    """The handout check flags a title longer than the figure, side-by-side subplot titles
    that run into each other, and a title with subplot titles in too small a top margin;
    the same figures laid out as the library now lays them out pass."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    long = "one training vs another: seed SD 0.0076, spread between cells 0.0115, Spearman 0.50"
    assert handouts.layout_problems(go.Figure(layout=dict(title=long)).to_dict())
    short = long.replace(", spread", "<br><sup>spread")
    assert not handouts.layout_problems(go.Figure(layout=dict(title=short + "</sup>")).to_dict())
    names = ["mlp-ensemble, b=2: rho random 0.50, picked 0.31", "lstm, b=2: rho random 0.59"]
    fig = make_subplots(1, 2, subplot_titles=names)
    assert any("overlap" in p for p in handouts.layout_problems(fig.to_dict()))
    fig = make_subplots(1, 2, subplot_titles=[n.replace(": ", "<br>") for n in names])
    fig.update_annotations(font_size=13)
    assert not any("overlap" in p for p in handouts.layout_problems(fig.to_dict()))
    fig.update_layout(title="a figure", margin=dict(t=30))
    assert any("top margin" in p for p in handouts.layout_problems(fig.to_dict()))
    fig.update_layout(margin=dict(t=90))
    assert handouts.layout_problems(fig.to_dict()) == []


def test_code_solution_markers_become_one_short_comment():
    from nbformat.v4 import new_code_cell, new_notebook

    nb = handouts.teacher_notes(new_notebook(cells=[new_code_cell(
        "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION")]))
    assert nb.cells[0].source == "def f(x):\n    # the teacher's answer:\n    return x"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_section_reads_in_a_few_minutes(path):
    """Issue 28: no section (up to the next ## or ### heading) of more than 450 words (about
    two minutes at 220 words a minute), no paragraph or list item of more than 150."""
    assert handouts.reading_problems(nbformat.read(path, 4)) == []


def test_the_reading_check_finds_long_sections_and_paragraphs():
    words = lambda n: " ".join(["word"] * n)  # noqa: E731
    md = nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook(cells=[
        md(f"## One\n{words(100)}\n\n{words(100)}"), md(f"{words(100)}\n\n{words(100)}"),
        md(f"### Two\n- {words(140)}\n- {words(140)}"),
        md(f"**Answers**\n\n### BEGIN SOLUTION\n1. {words(149)}\n2. {words(149)}\n"
           f"3. {words(149)}\n### END SOLUTION"),
        md(f"## Three\n{words(151)}")])
    assert handouts.reading_problems(nb) == [  # One: 400, Two: 281, the answers: 450 words
        "section 'Three': a paragraph of 151 words ('word word word word word word word word ...')"]
    nb.cells[1] = md(f"{words(100)}\n\n{words(100)}\n\n{words(60)}")  # One: 460 words
    nb.cells[2] = md(f"- {words(140)}\n- {words(140)}")  # no heading: Two joins One
    found = handouts.reading_problems(nb)
    assert found[0] == "section 'One': 741 words (at most 450)" and len(found) == 2  # + 'Answers'
