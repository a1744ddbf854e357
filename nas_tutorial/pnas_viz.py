"""Figures of a PNAS search (``nas_tutorial.pnas``): what the surrogate predicted, what the
children scored, how fast PNAS finds good cells compared with random search, and the beam.

Each function takes a :class:`~nas_tutorial.pnas.SearchResult` and returns a plotly figure
or a ``graphviz.Digraph`` (PNAS Sec. 5: the rank-correlation and efficiency figures, in
miniature); nothing is written or shown here.
"""
from __future__ import annotations

import math


def _fmt(rho: float) -> str:
    return "n/a" if rho is None or math.isnan(rho) else f"{rho:.2f}"


def plot_predictions(result):
    """Honest prediction (made before training) vs true validation accuracy of the trained
    children, one panel per level (rows) and predictor (columns), plus a last row for the
    random baseline's cells as predicted by the final surrogates; the hover names the cell
    and each panel title gives Spearman's rho."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    records = result.records("pnas")
    rows = [(f"b={lv['blocks']}", lv["spearman"],
             [x for x in records if x["blocks"] == lv["blocks"] and x["predicted"]])
            for lv in result.levels if lv["spearman"]]
    if result.holdout:
        pnas_keys = {x["key"] for x in records}
        rows.append(("random cells", result.holdout,
                     [x for x in result.records("random") if x["key"] not in pnas_keys]))
    if not rows:
        fig = go.Figure()
        fig.update_layout(title="no predictions yet (B = 1: only one-block cells)", height=200)
        return fig
    kinds = sorted(rows[0][1], key=lambda k: k != result.config.predictor)
    titles = [f"{kind}, {label}: Spearman {_fmt(rho[kind])}"
              for label, rho, _ in rows for kind in kinds]
    fig = make_subplots(rows=len(rows), cols=len(kinds), subplot_titles=titles,
                        horizontal_spacing=0.12, vertical_spacing=0.25 / len(rows))
    for r, (_, _, recs) in enumerate(rows, start=1):
        acc = [x["accuracy"] for x in recs]
        for c, kind in enumerate(kinds, start=1):
            pred = [x["predicted"][kind] for x in recs]
            lo, hi = min(acc + pred), max(acc + pred)
            fig.add_trace(go.Scatter(x=pred, y=acc, mode="markers", showlegend=False,
                                     text=[x["key"] for x in recs],
                                     hovertemplate="%{text}<br>predicted %{x:.3f}"
                                                   "<br>true %{y:.3f}<extra></extra>",
                                     marker=dict(size=9, color="#4477aa" if c == 1 else "#ee6677")),
                          row=r, col=c)
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                                     hoverinfo="skip", line=dict(color="#bbbbbb", dash="dot")),
                          row=r, col=c)
            fig.update_xaxes(title_text="predicted", row=r, col=c)
            fig.update_yaxes(title_text="true", row=r, col=c)
    fig.update_layout(title=f"predicted vs true accuracy of the beam (K={result.config.beam}); "
                            f"{result.config.predictor} chose the beam",
                      height=260 * len(rows) + 80, margin=dict(l=50, r=20, t=90, b=40))
    return fig


def plot_efficiency(result):
    """Best validation accuracy so far vs number of models trained: PNAS vs random search
    in the same space with the same budget (PNAS Sec. 5.3, in miniature)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for source, color in (("pnas", "#ee6677"), ("random", "#4477aa")):
        curve = result.best_so_far(source) if result.records(source) else []
        if curve:
            fig.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=curve,
                                     mode="lines", name=source, line=dict(color=color,
                                                                          shape="hv")))
    edge = 0
    for lv in result.levels:  # mark where each level of PNAS starts
        fig.add_vline(x=edge + 0.5, line=dict(color="#dddddd", dash="dot"))
        edge += sum(1 for r in result.records("pnas") if r["blocks"] == lv["blocks"])
    fig.update_layout(title="best accuracy so far vs models trained", height=330,
                      xaxis_title="models trained", yaxis_title="best validation accuracy",
                      margin=dict(l=50, r=20, t=60, b=40))
    return fig


def draw_beams(result, max_cells: int = 8):
    """The best cells kept at each level as small drawings: one row per level (b = 1 on
    top), cells side by side, inputs at the top of each cell (graphviz)."""
    from .viz import add_cell, new_digraph

    g = new_digraph("beams")
    g.attr(rankdir="TB", nodesep="0.1", ranksep="0.25")
    g.attr("node", fontsize="9", height="0.2")
    g.attr("edge", fontsize="7", penwidth="1.0")
    acc = {r["key"]: r["accuracy"] for r in result.records("pnas")}
    cells = {r["key"]: r["cell"] for r in result.records("pnas")}
    previous = None
    for lv in result.levels:
        b = lv["blocks"]
        keys = sorted(lv["beam"], key=lambda k: -acc[k])[:max_cells]
        with g.subgraph(name=f"cluster_level{b}") as level:
            level.attr(label=f"b = {b}: best {len(keys)} of {len(lv['beam'])} trained "
                             f"({lv['candidates']} candidates)", style="rounded",
                       color="#cccccc")
            for j, key in enumerate(keys):
                pairs = cells[key]
                with level.subgraph(name=f"cluster_b{b}_{j}") as sub:
                    sub.attr(color="#eeeeee")
                    add_cell(sub, pairs, list(range(2, 2 + len(pairs) // 2)),
                              prefix=f"b{b}_{j}_", title=f"acc {acc[key]:.3f}")
        if previous is not None:  # invisible edges keep the levels in rows, in order
            for j in range(min(len(keys), previous[1])):
                g.edge(f"{previous[0]}_{j}_out", f"b{b}_{j}_in0", style="invis")
        previous = (f"b{b}", len(keys))
    return g
