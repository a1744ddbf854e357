"""Figures for SPOS (:mod:`nas_tutorial.spos`): Pareto fronts, search progress, the chosen
path as a chain of blocks, ranking quality and BN recalibration.

Every function returns a plotly figure or a ``graphviz.Digraph`` and writes nothing;
plotly and graphviz are imported inside the functions.
"""
from __future__ import annotations

from ..methods.spos import CHOICES, SupernetConfig, decode
from .shared import add_band, new_digraph

# One colour per block choice (Shuffle 3x3 .. Xception), shared by every figure.
CHOICE_COLORS = {"shuffle_3x3": "#66ccee", "shuffle_5x5": "#4477aa", "shuffle_7x7": "#aa3377",
                 "xception": "#ccbb44"}
METHOD_COLORS = {"evolution": "#ee6677", "random": "#4477aa"}


def _label(path) -> str:
    return "(" + ",".join(str(c) for c in path) + ")"


def pareto_front(points) -> list:
    """Indices of the points (flops, fitness) that no other point beats on both."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -float("inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(results: dict, flops_limit=None, title="accuracy vs FLOPs"):
    """Every evaluated path (hover: the path, params) and each method's Pareto front."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, res in results.items():
        ev = res.evaluated if hasattr(res, "evaluated") else res
        x = [e["flops"] / 1e6 for e in ev]
        y = [e["fitness"] for e in ev]
        text = [f"{_label(e['path'])}<br>{e['params'] / 1e6:.3f}M params, gen {e['generation']}"
                f" ({e['origin']})" for e in ev]
        color = METHOD_COLORS.get(name, None)
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=name, text=text,
                                 hovertemplate="%{text}<br>%{x:.3f} MFLOPs, acc %{y:.3f}",
                                 marker=dict(size=6, opacity=0.55, color=color)))
        front = pareto_front(list(zip(x, y)))
        fig.add_trace(go.Scatter(x=[x[i] for i in front], y=[y[i] for i in front],
                                 mode="lines+markers", name=f"{name} front", text=[
                                     text[i] for i in front],
                                 hovertemplate="%{text}<br>%{x:.3f} MFLOPs, acc %{y:.3f}",
                                 line=dict(shape="hv", color=color), marker=dict(size=9)))
    if flops_limit is not None:
        fig.add_vline(x=flops_limit, line_dash="dash", line_color="#888",
                      annotation_text="FLOPs limit")
    fig.update_layout(title=title, xaxis_title="MFLOPs (multiply-adds)",
                      yaxis_title="supernet accuracy (held-out)", height=380,
                      margin=dict(l=50, r=20, t=50, b=40))
    return fig


def plot_search_progress(evolution, random=None, title="best fitness vs evaluations"):
    """Best fitness so far at the end of each generation; random search at the same
    numbers of evaluated paths."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, res in (("evolution", evolution), ("random", random)):
        if res is None:
            continue
        pts = res.best_per_generation()
        fig.add_trace(go.Scatter(x=[n for n, _ in pts], y=[b for _, b in pts],
                                 mode="lines+markers", name=name,
                                 line=dict(color=METHOD_COLORS[name])))
    fig.update_layout(title=title, xaxis_title="paths evaluated",
                      yaxis_title="best accuracy so far", height=330,
                      margin=dict(l=50, r=20, t=50, b=40))
    return fig


def draw_path(path, config: SupernetConfig, title: str | None = None):
    """The path as a chain of coloured blocks, one row per stage (``/2``: stride 2)."""
    g = new_digraph("spos_path")
    g.attr(rankdir="TB", nodesep="0.15", ranksep="0.3")
    g.node("stem", f"stem {config.stem_channels}", fillcolor="#d9ead3")
    prev, i = "stem", 0
    for s, (repeats, ch) in enumerate(zip(config.stage_repeats, config.stage_channels)):
        with g.subgraph(name=f"stage{s}") as row:
            row.attr(rank="same")
            for r in range(repeats):
                b, scale = decode(path[i], config)
                name = CHOICES[b]
                label = f"{i}: {name.replace('_', ' ')}" + (" /2" if r == 0 else "")
                if len(config.channel_scales) > 1:
                    label += f" x{scale:g}"
                dark = name in ("shuffle_5x5", "shuffle_7x7")
                row.node(f"l{i}", label, fillcolor=CHOICE_COLORS[name],
                         fontcolor="white" if dark else "black",
                         tooltip=f"stage {s}, {ch} channels")
                prev, i = f"l{i}", i + 1
    for k in range(i):
        g.edge("stem" if k == 0 else f"l{k - 1}", f"l{k}")
    g.node("head", f"conv {config.last_channels}, pool, fc", fillcolor="#fce5cd")
    g.edge(prev, "head")
    if title:
        g.attr(label=title, labelloc="t")
    return g


def plot_ranking(rank: dict, title=None):
    """Inherited (supernet) vs stand-alone accuracy per path, with Kendall tau; when
    ``rank`` holds them (:func:`~nas_tutorial.spos.ranking_from_table`), the same paths
    with the supernet's training-time BN statistics too, in grey."""
    import plotly.graph_objects as go

    text = [_label(p) for p in rank["paths"]]
    fig = go.Figure()
    if "inherited_no_recal" in rank:
        fig.add_trace(go.Scatter(
            x=rank["inherited_no_recal"], y=rank["standalone"], mode="markers", text=text,
            name=f"no recalibration: tau {rank['tau_no_recal']:.2f} "
                 f"(p {rank['p_value_no_recal']:.2f})",
            marker=dict(size=8, color="#bbbbbb"),
            hovertemplate="%{text}<br>supernet %{x:.3f}, alone %{y:.3f}"))
    fig.add_trace(go.Scatter(
        x=rank["inherited"], y=rank["standalone"], mode="markers", text=text,
        name=f"BN recalibrated: tau {rank['tau']:.2f} (p {rank['p_value']:.2f})",
        marker=dict(size=10, color="#ee6677"),
        hovertemplate="%{text}<br>supernet %{x:.3f}, alone %{y:.3f}"))
    fig.update_layout(title=title or f"ranking quality over {len(text)} paths: "
                                     f"Kendall tau = {rank['tau']:.2f}",
                      xaxis_title="accuracy with inherited weights (supernet)",
                      yaxis_title="accuracy trained stand-alone", height=380,
                      legend=dict(orientation="h", y=-0.25),
                      margin=dict(l=50, r=20, t=50, b=40))
    return fig


def plot_search_study(study, title=None):
    """Best fitness so far against paths evaluated, evolution vs random search over several
    search seeds (:func:`~nas_tutorial.spos.search_study`): mean line and the 95% interval of
    the mean (bootstrap over the seeds)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name in ("evolution", "random"):
        curves = []
        for r in study:
            best, curve = -float("inf"), []
            for e in r[name].evaluated:
                best = max(best, e["fitness"])
                curve.append(best)
            curves.append(curve)
        n = min(len(c) for c in curves)
        add_band(fig, range(1, n + 1), [c[:n] for c in curves], f"{name} (mean, 95% interval)",
                 METHOD_COLORS[name], band="interval")
    fig.update_layout(title=title or f"best path so far, {len(study)} search seeds",
                      xaxis_title="paths evaluated", yaxis_title="best supernet accuracy",
                      height=360, margin=dict(l=50, r=20, t=50, b=40))
    return fig


def plot_bn_recalibration(paths, off, on, title="BN recalibration"):
    """Accuracy of the same paths with the supernet's training-time BN statistics (off)
    and after recalibration (on)."""
    import plotly.graph_objects as go

    text = [_label(p) for p in paths]
    fig = go.Figure()
    for name, ys, color in (("recalibration off", off, "#bbbbbb"),
                            ("recalibration on", on, "#228833")):
        fig.add_trace(go.Bar(x=text, y=ys, name=name, marker_color=color))
    fig.update_layout(title=title, barmode="group", yaxis_title="held-out accuracy",
                      xaxis_title="path", height=340, margin=dict(l=50, r=20, t=50, b=80))
    return fig


def plot_supernet_history(history: dict, title="supernet training"):
    """Loss and accuracy per epoch over the sampled paths."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy (sampled paths)"))
    fig.add_trace(go.Scatter(x=history["epoch"], y=history["train_loss"], name="loss"), 1, 1)
    fig.add_trace(go.Scatter(x=history["epoch"], y=history["train_acc"], name="acc"), 1, 2)
    fig.update_layout(title=title, height=300, showlegend=False,
                      margin=dict(l=40, r=20, t=60, b=40))
    fig.update_xaxes(title_text="epoch")
    return fig


def plot_supernet_sweep(rows, ceiling: dict | None = None, title=None):
    """How long to train the supernet, measured (``benchmarks/spos_supernet_sweep.py``):
    per number of supernet epochs, over the supernet seeds (mean, min-max bars), its
    training accuracy, Kendall tau against the table with and without BN recalibration,
    and the share of search seeds in which evolution found a path at least as good as
    random search. ``ceiling`` (:func:`~nas_tutorial.spos.ranking_ceiling`): the tau a
    perfect ranker could expect against the table, up to its bootstrap bound, as a band."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = sorted({r["epochs"] for r in rows})

    def stat(f):
        vals = [[f(r) for r in rows if r["epochs"] == e] for e in epochs]
        mean = np.array([np.mean(v) for v in vals])
        return mean, dict(type="data", symmetric=False,
                          array=np.array([max(v) for v in vals]) - mean,
                          arrayminus=mean - np.array([min(v) for v in vals]))

    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "training accuracy", "Kendall tau vs the table", "evolution >= random"))
    m, err = stat(lambda r: r["train_acc"])
    fig.add_trace(go.Scatter(x=epochs, y=m, error_y=err, name="training accuracy",
                             mode="lines+markers", line=dict(color="#228833")), 1, 1)
    recal = [k for k in rows[0]["ranking"] if k != "none"]
    for key, name, color in [("none", "no recalibration", "#bbbbbb")] + [
            (k, f"recalibrated, {k} batches", c) for k, c in zip(recal, ("#ee6677", "#aa3377"))]:
        m, err = stat(lambda r: r["ranking"][key]["tau"])
        fig.add_trace(go.Scatter(x=epochs, y=m, error_y=err, name=f"tau, {name}",
                                 mode="lines+markers", line=dict(color=color)), 1, 2)
    if ceiling is not None:
        fig.add_hrect(y0=ceiling["tau_max"], y1=ceiling["tau_max_upper"], fillcolor="#999999",
                      opacity=0.2, line_width=0, row=1, col=2)
        # named in the legend, not written over the data
        fig.add_trace(go.Scatter(x=[min(epochs), max(epochs)], y=[ceiling["tau_max"]] * 2,
                                 mode="lines", line=dict(color="#888", dash="dash"),
                                 name="a perfect ranker's tau (grey: up to its 95% bound)"),
                      1, 2)
    m, err = stat(lambda r: np.mean([s["evolution"] >= s["random"] for s in r["search"]]))
    fig.add_trace(go.Scatter(x=epochs, y=m, error_y=err, name="evolution >= random",
                             mode="lines+markers", line=dict(color="#4477aa")), 1, 3)
    fig.update_xaxes(title_text="supernet epochs")
    fig.update_yaxes(range=[-0.55, 1.05], row=1, col=2)
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=3)  # share of search seeds
    seeds = len({r["seed"] for r in rows})
    fig.update_layout(title=title or f"supernet length: {seeds} supernet seeds, mean and min-max",
                      height=380,
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=50, r=20, t=70, b=40))
    return fig
