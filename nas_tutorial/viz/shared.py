"""The shared drawing and palette: cells with graphviz, curves with plotly, one colour per op.

Every function returns a figure (``plotly.graph_objects.Figure``/``FigureWidget``) or a
``graphviz.Digraph`` and never writes a file or opens a viewer; ``save_svg``/``save_html``
write when asked. plotly and graphviz are imported inside the functions only, so the
algorithms and the training loop run without them (a GPU box may lack both).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..checkpoints import atomic_write
from .notebook import displayable, replace

# One colour per op, shared by every drawing and legend (colour-blind-safe-ish palette).
OP_COLORS = {
    "none": "#bbbbbb",
    "max_pool_3x3": "#4477aa", "avg_pool_3x3": "#66ccee",
    "skip_connect": "#228833", "identity": "#228833",
    "sep_conv_3x3": "#ee6677", "sep_conv_5x5": "#aa3377", "sep_conv_7x7": "#882255",
    "dil_conv_3x3": "#ccbb44", "dil_conv_5x5": "#cc8800",
    "conv_7x1_1x7": "#7f3c8d",
}


def has_dot() -> bool:
    """True when the system graphviz ``dot`` binary is on PATH (drawings need it)."""
    return shutil.which("dot") is not None


_DRAWING = []


def _drawing_class():
    """``Drawing``: a ``graphviz.Digraph`` that shows itself as SVG *and* PNG. JupyterLab
    does not render SVG from an untrusted notebook (a fresh clone, an nbviewer copy), it
    does render PNG; a trusted notebook shows the sharper SVG. Made on first use, so
    graphviz stays out of the import path of the algorithms."""
    if not _DRAWING:
        import base64

        import graphviz

        class Drawing(graphviz.Digraph):
            def _repr_mimebundle_(self, include=None, exclude=None, **_):
                if not has_dot():
                    return {"text/plain": f"[drawing '{self.name}': install graphviz (the "
                                          f"'dot' program) to see it]"}
                dpi = self.graph_attr.get("dpi")
                self.graph_attr["dpi"] = "72"  # the PNG is the fallback: keep it small
                try:
                    png = base64.b64encode(self.pipe(format="png")).decode("ascii")
                except Exception:  # a dot without PNG output: the SVG alone
                    png = None
                finally:
                    if dpi is None:
                        del self.graph_attr["dpi"]
                    else:
                        self.graph_attr["dpi"] = dpi
                bundle = {"image/svg+xml": self.pipe(format="svg", encoding="utf-8"),
                          "text/plain": f"[drawing: {self.name}]"}
                return {**bundle, "image/png": png} if png else bundle

        _DRAWING.append(Drawing)
    return _DRAWING[0]


# Graphviz's size (inches at 72 points each): a drawing wider than about 910 px is scaled
# down to fit; smaller ones keep theirs. JupyterLab's output column is 953 px in a 1,400-px
# window with the file browser open (measured in the browser test's Chromium), where a
# 999-px drawing got a scrollbar and lost its output node; a handout page is wider.
MAX_SIZE = "9.5,40"


def new_digraph(name, size=None):
    """An empty left-to-right drawing (a ``graphviz.Digraph``) in the package style, at
    most :data:`MAX_SIZE` unless ``size`` says otherwise."""
    g = _drawing_class()(name, format="svg")
    g.attr(rankdir="LR", fontname="Helvetica", bgcolor="transparent")
    g.attr(size=size or MAX_SIZE)
    g.attr("node", style="filled,rounded", shape="box", fontname="Helvetica", fontsize="12",
           height="0.35")
    g.attr("edge", fontname="Helvetica", fontsize="10", penwidth="1.6")
    return g


def add_cell(g, pairs, concat, prefix="", title=None, weights=None):
    """Add one cell's nodes and edges to ``g`` (a graph or a subgraph)."""
    steps = len(pairs) // 2
    label = {0: "c_{k-2}", 1: "c_{k-1}"}
    g.node(prefix + "in1", label[1], fillcolor="#d9ead3")  # defined last = drawn on top (LR)
    g.node(prefix + "in0", label[0], fillcolor="#d9ead3")
    for i in range(steps):
        g.node(prefix + f"n{i}", str(i), fillcolor="#dde5f0", shape="circle", width="0.35")
    g.node(prefix + "out", "c_{k}", fillcolor="#fce5cd")
    for k, (op, inp) in enumerate(pairs):
        src = prefix + (f"in{inp}" if inp < 2 else f"n{inp - 2}")
        attrs = {"label": op, "color": OP_COLORS.get(op, "#555555"),
                 "fontcolor": OP_COLORS.get(op, "#555555")}
        if weights is not None:
            attrs["penwidth"] = f"{0.6 + 3 * float(weights[k]):.2f}"
            attrs["label"] = f"{op} {float(weights[k]):.2f}"
        g.edge(src, prefix + f"n{k // 2}", **attrs)
    for i in concat:
        g.edge(prefix + f"n{i - 2}", prefix + "out", color="#999999", style="dashed",
               arrowsize="0.6")
    for i in range(steps - 1):  # node i above node i + 1 where they share a column
        g.edge(prefix + f"n{i}", prefix + f"n{i + 1}", style="invis", weight="0")
    if title:
        g.attr(label=title, labelloc="t", fontsize="14")


def draw_cell(genotype, cell: str = "normal", title: str | None = None, size: str | None = None):
    """A ``graphviz.Digraph`` of one cell: inputs left, nodes middle, output right, each edge
    labelled and coloured by its op."""
    if cell not in ("normal", "reduce"):
        raise ValueError("cell must be 'normal' or 'reduce'")
    g = new_digraph(cell, size)
    add_cell(g, getattr(genotype, cell), getattr(genotype, cell + "_concat"),
              title=title if title is not None else f"{cell} cell")
    return g


def draw_genotype(genotype, title: str | None = None, size: str | None = None):
    """Both cells side by side (one cell when normal == reduce, as in PNAS)."""
    g = new_digraph("genotype", size)
    same = genotype.normal == genotype.reduce and genotype.normal_concat == genotype.reduce_concat
    cells = ["normal"] if same else ["normal", "reduce"]
    # With rankdir=LR dot stacks what is defined last on top: reduce first puts normal on top.
    for cell in reversed(cells):
        with g.subgraph(name=f"cluster_{cell}") as sub:
            sub.attr(style="rounded", color="#cccccc")
            add_cell(sub, getattr(genotype, cell), getattr(genotype, cell + "_concat"),
                      prefix=cell[0] + "_",
                      title="cell (normal = reduce)" if same else f"{cell} cell")
    if title:
        g.attr(label=title, labelloc="t")
    return g


def save_svg(graph, path) -> Path | None:
    """Render a Digraph to ``path`` (.svg); returns None (and says why) without ``dot``."""
    path = Path(path)
    if not has_dot():
        print(f"graphviz 'dot' not found: skipped {path.name} (install graphviz to draw cells)")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    svg = graph.pipe(format="svg")
    return atomic_write(path, lambda p: p.write_bytes(svg))  # all of it or the old file


def save_html(fig, path) -> Path:
    """Write a plotly figure as a self-contained HTML file (plotly.js inlined: offline),
    atomically: an interrupted write leaves the previous file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda p: fig.write_html(str(p), include_plotlyjs=True,
                                                       full_html=True))


# -- training curves ----------------------------------------------------------------------
def plot_history(history, title: str = "training"):
    """Loss and accuracy per epoch (train and, when present, validation)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    _fill_history(fig, history)
    fig.update_layout(title=title, height=330, margin=dict(l=40, r=20, t=60, b=40))
    fig.update_xaxes(title_text="epoch")
    return fig


def _fill_history(fig, history):
    import plotly.graph_objects as go

    series = [("train loss", history.train_loss, 1), ("valid loss", history.valid_loss, 1),
              ("train acc", history.train_acc, 2), ("valid acc", history.valid_acc, 2)]
    if not fig.data:
        for name, ys, col in series:
            fig.add_trace(go.Scatter(x=list(history.epoch[:len(ys)]), y=list(ys), name=name,
                                     mode="lines+markers"), row=1, col=col)
    else:
        for trace, (name, ys, col) in zip(fig.data, series):
            trace.x, trace.y = list(history.epoch[:len(ys)]), list(ys)


class LivePlot:
    """Training curves that redraw after every epoch: pass ``live.update`` as the
    ``callback`` of :func:`nas_tutorial.train` (or a search).

    A plain plotly figure shown through a display handle and replaced in place, rather than
    a ``FigureWidget``: the saved notebook then holds the final curves (with their static
    copy), not an empty widget.
    """

    def __init__(self, title: str = "training (live)"):
        from plotly.subplots import make_subplots

        self.fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
        self.fig.update_layout(title=title, height=330, margin=dict(l=40, r=20, t=60, b=40))
        self.fig.update_xaxes(title_text="epoch")
        self._handle = None

    def update(self, history) -> None:
        _fill_history(self.fig, history)
        if self._handle is not None:
            replace(self._handle, displayable(self.fig))  # a new output: see replace

    __call__ = update

    def _ipython_display_(self):
        from IPython.display import display

        self._handle = display(displayable(self.fig), display_id=True)


def mean_interval(curves, level: float = 0.95, resamples: int = 2000, seed: int = 0):
    """The mean of ``curves`` (seeds x points, NaN allowed) at each point and its ``level``
    bootstrap interval over the seeds (the curves resampled whole, so the band is the
    uncertainty of the mean curve; a fixed resampling seed keeps it reproducible)."""
    import warnings

    import numpy as np

    a = np.asarray(curves, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    with warnings.catch_warnings():  # points before a curve starts are all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(a[idx], axis=1)  # (resamples, points)
        q = (1 - level) / 2
        return (np.nanmean(a, 0), np.nanquantile(means, q, axis=0),
                np.nanquantile(means, 1 - q, axis=0))


def add_band(fig, x, curves, name, color, row=None, col=None, band: str = "minmax"):
    """Add the mean of ``curves`` (one list per seed, NaN allowed) as a step line and a
    shaded band: ``band="minmax"``, how far the seeds spread around it; ``"interval"``, the
    95% bootstrap interval of the mean (:func:`mean_interval`), how sure the mean is."""
    import numpy as np
    import plotly.graph_objects as go

    a = np.asarray(curves, dtype=float)
    if band == "interval":
        mean, lo, hi = mean_interval(a)
    else:
        lo, hi, mean = np.nanmin(a, 0), np.nanmax(a, 0), np.nanmean(a, 0)
    kw = dict(row=row, col=col) if row else {}
    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=list(hi) + list(lo[::-1]),
                             fill="toself", fillcolor=color, opacity=0.2, line=dict(width=0),
                             hoverinfo="skip", showlegend=False, legendgroup=name), **kw)
    fig.add_trace(go.Scatter(x=list(x), y=list(mean), mode="lines", name=name,
                             legendgroup=name, line=dict(color=color, shape="hv")), **kw)
