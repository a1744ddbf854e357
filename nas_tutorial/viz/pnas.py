"""Figures of a PNAS search (``nas_tutorial.pnas``): what the surrogate predicted, what the
children scored, how fast PNAS finds good cells compared with random search, and the beam.

Each function takes a :class:`~nas_tutorial.pnas.SearchResult` and returns a plotly figure
or a ``graphviz.Digraph`` (PNAS Sec. 5: the rank-correlation and efficiency figures, in
miniature); nothing is written or shown here.
"""
from __future__ import annotations

import math

from .shared import add_band, add_cell, new_digraph


def _fmt(rho: float) -> str:
    return "n/a" if rho is None or math.isnan(rho) else f"{rho:.2f}"


_COLORS = {"lstm": "#4477aa", "mlp-ensemble": "#ee6677", "pnas": "#ee6677", "random": "#4477aa"}


def plot_predictions(result):
    """Predicted vs true accuracy at each level b >= 2 (rows) for each predictor (columns),
    the predictor fitted on cells of fewer blocks (PNAS Sec. 5.2): grey dots are a fixed
    set of random b-block cells from the table (truth: the table's mean over its seeds),
    coloured dots the K children the search picked and trained. Titles give Spearman's rho
    on both sets; hover names the cell."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    levels = [lv for lv in result.levels if lv["blocks"] >= 2]
    if not levels:
        fig = go.Figure()
        fig.update_layout(title="no predictions yet (B = 1: only one-block cells)", height=200)
        return fig
    kinds = sorted(levels[0]["spearman"]["selected"], key=lambda k: k != result.config.predictor)
    titles = []
    for lv in levels:
        for kind in kinds:
            rnd = lv["spearman"].get("random", {}).get(kind)
            sel = lv["spearman"]["selected"][kind]
            # two short lines: side by side, one long line ran into the next title
            titles.append(f"{kind}, b={lv['blocks']}<br>rho: random {_fmt(rnd)}, "
                          f"picked {_fmt(sel)}")
    fig = make_subplots(rows=len(levels), cols=len(kinds), subplot_titles=titles,
                        horizontal_spacing=0.1, vertical_spacing=0.3 / len(levels))
    picked = {}
    for r in result.records("pnas"):
        picked.setdefault(r["blocks"], []).append(r)
    for row, lv in enumerate(levels, start=1):
        ref = lv.get("reference")
        recs = [x for x in picked.get(lv["blocks"], []) if x["predicted"]]
        for col, kind in enumerate(kinds, start=1):
            first = row == 1 and col == 1
            if ref:
                fig.add_trace(go.Scatter(
                    x=ref["predicted"][kind], y=ref["truth"], mode="markers", text=ref["keys"],
                    name="random cells (table)", legendgroup="ref", showlegend=first,
                    marker=dict(size=5, color="#bbbbbb"),
                    hovertemplate="%{text}<br>predicted %{x:.3f}<br>true %{y:.3f}<extra></extra>"),
                    row=row, col=col)
            fig.add_trace(go.Scatter(
                x=[x["predicted"][kind] for x in recs], y=[x["accuracy"] for x in recs],
                mode="markers", text=[x["key"] for x in recs], name="picked and trained",
                legendgroup="sel", showlegend=first,
                marker=dict(size=9, color=_COLORS.get(kind, "#228833"),
                            line=dict(width=1, color="white")),
                hovertemplate="%{text}<br>predicted %{x:.3f}<br>true %{y:.3f}<extra></extra>"),
                row=row, col=col)
            fig.update_xaxes(title_text="predicted", row=row, col=col)
            fig.update_yaxes(title_text="true", row=row, col=col)
    fig.update_layout(title=f"honest predictions per level (K={result.config.beam} picked by "
                            f"{result.config.predictor})",
                      height=300 * len(levels) + 100, margin=dict(l=50, r=20, t=100, b=40),
                      legend=dict(orientation="h", y=-0.08))
    fig.update_annotations(font_size=13)
    return fig


def plot_efficiency(result):
    """Best accuracy of a B-block cell so far vs number of models trained: PNAS vs random
    search over B-block cells with the same budget and oracle (PNAS Sec. 5.3, like with
    like: PNAS's smaller cells count as spent models, not as found cells)."""
    import plotly.graph_objects as go

    b = result.config.blocks
    fig = go.Figure()
    for source in ("pnas", "random"):
        curve = result.best_so_far(source, blocks=b)
        if curve:
            fig.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=curve, mode="lines",
                                     name=source, line=dict(color=_COLORS[source], shape="hv")))
    edge = 0
    for lv in result.levels:  # mark where each level of PNAS starts
        fig.add_vline(x=edge + 0.5, line=dict(color="#dddddd", dash="dot"))
        edge += sum(1 for r in result.records("pnas") if r["blocks"] == lv["blocks"])
    fig.update_layout(title=f"best {b}-block cell so far vs models trained "
                            f"(oracle: {result.config.oracle})", height=330,
                      xaxis_title="models trained", yaxis_title="best validation accuracy",
                      margin=dict(l=50, r=20, t=60, b=40))
    return fig


def plot_efficiency_study(results, seed_sd: float | None = None):
    """The efficiency figure over several search seeds: best B-block cell so far vs models
    trained, mean line and the 95% interval of the mean (bootstrap over the seeds) for PNAS
    and for random search. ``seed_sd`` (the
    table's seed-to-seed SD of one training) is drawn as a band around PNAS's final mean:
    a gap between the curves smaller than that band is noise."""
    import warnings

    import numpy as np
    import plotly.graph_objects as go

    b = results[0].config.blocks
    fig = go.Figure()
    with warnings.catch_warnings():  # levels before the first B-block cell are all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for source in ("pnas", "random"):
            curves = [r.best_so_far(source, blocks=b) for r in results]
            n = min(len(c) for c in curves)
            add_band(fig, range(1, n + 1), [c[:n] for c in curves],
                     f"{source} (mean, 95% interval)", _COLORS[source], band="interval")
        final = float(np.nanmean([r.best_so_far("pnas", blocks=b)[-1] for r in results]))
    if seed_sd:
        fig.add_hrect(y0=final - seed_sd, y1=final + seed_sd, fillcolor="#999999",
                      opacity=0.15, line_width=0,
                      annotation_text="± 1 seed SD of one training", annotation_position="left")
    fig.update_layout(title=f"best {b}-block cell so far vs models trained, "
                            f"{len(results)} search seeds", height=360,
                      xaxis_title="models trained", yaxis_title="best validation accuracy",
                      margin=dict(l=50, r=20, t=60, b=40))
    return fig


def plot_spearman_study(results):
    """Spearman's rho per level and predictor over several search seeds: on random unseen
    cells (the paper's measure) and on the K picked children, mean with min-max bars."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    parts = [("random", "random unseen cells (table)"), ("selected", "the K picked children")]
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in parts], shared_yaxes=True)
    for col, (part, _) in enumerate(parts, start=1):
        per_seed = [r.spearman(part) for r in results]
        kinds = sorted({k for d in per_seed for k in d})
        for kind in kinds:
            levels = sorted({b for d in per_seed for b in d.get(kind, {})})
            vals = np.array([[d.get(kind, {}).get(b, np.nan) for b in levels] for d in per_seed])
            mean = np.nanmean(vals, 0)
            fig.add_trace(go.Scatter(
                x=[f"b={b}" for b in levels], y=mean, mode="markers+lines", name=kind,
                legendgroup=kind, showlegend=col == 1, line=dict(color=_COLORS[kind]),
                error_y=dict(type="data", symmetric=False, array=np.nanmax(vals, 0) - mean,
                             arrayminus=mean - np.nanmin(vals, 0))), row=1, col=col)
    fig.add_hline(y=0, line=dict(color="#cccccc"))
    fig.update_yaxes(title_text="Spearman rho", range=[-1.05, 1.05], row=1, col=1)
    fig.update_layout(title=f"predictor quality over {len(results)} search seeds "
                            f"(mean, min-max)", height=340, margin=dict(l=50, r=20, t=70, b=40))
    return fig


def plot_seed_noise(table):
    """How noisy one training is: each tabulated cell's accuracy with one seed against
    another, one colour per group; the title gives the seed SD and the spread between cells.
    Points far from the diagonal are cells that one training ranks high and the next low."""
    import numpy as np
    import plotly.graph_objects as go

    palette = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee"]
    fig = go.Figure()
    lo, hi = 1.0, 0.0
    for k, (group, rows) in enumerate(table.groups().items()):
        rows = [r for r in rows if len(r.get("accuracy", [])) >= 2]
        if not rows:
            continue
        a = np.array([r["accuracy"][:2] for r in rows])
        lo, hi = min(lo, a.min()), max(hi, a.max())
        fig.add_trace(go.Scatter(x=a[:, 0], y=a[:, 1], mode="markers", name=group,
                                 text=[r["key"] for r in rows],
                                 marker=dict(size=6, color=palette[k % len(palette)],
                                             opacity=0.7),
                                 hovertemplate="%{text}<br>seed 0 %{x:.3f}<br>seed 1 %{y:.3f}"
                                               "<extra></extra>"))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                             hoverinfo="skip", line=dict(color="#bbbbbb", dash="dot")))
    s = table.stats()
    fig.update_layout(title=f"one training vs another: seed-vs-seed Spearman "
                            f"{s['seed_spearman']:.2f}<br><sup>seed SD {s['seed_sd']:.4f}, "
                            f"spread between cells {s['arch_sd']:.4f}</sup>", height=440,
                      xaxis_title="accuracy, seed 0", yaxis_title="accuracy, seed 1",
                      margin=dict(l=50, r=20, t=80, b=40))
    return fig


def draw_beams(result, max_cells: int = 8):
    """The best cells kept at each level as small drawings: one column per level (b = 1 on
    the left), its cells stacked best first with their accuracy, inputs at the top of each
    cell (graphviz). Stacked, not side by side: graphviz keeps the order of a column (an
    invisible edge runs from each cell to the next), where it shuffled a row, and a column
    of small cells fits the page where a row of eight did not."""
    g = new_digraph("beams")
    g.attr(rankdir="TB", nodesep="0.15", ranksep="0.2")
    g.attr("node", fontsize="9", height="0.2")
    g.attr("edge", fontsize="7", penwidth="1.0")
    acc = {r["key"]: r["accuracy"] for r in result.records("pnas")}
    cells = {r["key"]: r["cell"] for r in result.records("pnas")}
    for lv in result.levels:
        b = lv["blocks"]
        keys = sorted(lv["beam"], key=lambda k: -acc[k])[:max_cells]
        with g.subgraph(name=f"cluster_level{b}") as level:
            level.attr(label=f"b = {b}: best {len(keys)} of {len(lv['beam'])}\n"
                             f"({lv['candidates']} candidates)", style="rounded",
                       color="#cccccc", labelloc="t")
            for j, key in enumerate(keys):
                pairs = cells[key]
                with level.subgraph(name=f"cluster_b{b}_{j}") as sub:
                    sub.attr(color="#eeeeee")
                    add_cell(sub, pairs, list(range(2, 2 + len(pairs) // 2)),
                              prefix=f"b{b}_{j}_", title=f"{j + 1}. acc {acc[key]:.3f}")
                if j:  # the next cell below this one, in order
                    level.edge(f"b{b}_{j - 1}_out", f"b{b}_{j}_in0", style="invis")
    return g
