"""Figures of the comparison (:mod:`nas_tutorial.compare`): the table of the three methods,
the PC-DARTS seed study, each search's gap to its random baseline, and where found cells land
among a ground-truth table's random cells.

Each function takes plain data (rows, study dicts, a table, numbers computed by
:mod:`nas_tutorial.compare`) and returns a plotly figure; plotly is imported inside them.
``nas_tutorial.compare`` re-exports them (``cmp.plot_table`` ..., as before).
"""
from __future__ import annotations

_COLORS = {"PC-DARTS": "#1f77b4", "SPOS": "#2ca02c", "PNAS": "#d62728"}


def plot_table(rows, recorded=()):
    """Accuracy after retraining against search wall time: one marker per row, filled for
    a search, open for its random baseline; recorded runs as diamonds with their device."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for source, rs, symbol in (("this run", rows, "circle"), ("recorded", recorded, "diamond")):
        for r in rs:
            base = r["method"].split()[0]
            baseline = r["method"].endswith("random")
            fig.add_trace(go.Scatter(
                x=[max(r["search_s"], 0.01)], y=[r["accuracy"]], mode="markers",
                name=f"{r['method']} ({source if source == 'this run' else r['device']})",
                marker=dict(size=13, color=_COLORS.get(base, "gray"),
                            symbol=symbol + ("-open" if baseline else ""),
                            line=dict(width=2, color=_COLORS.get(base, "gray"))),
                hovertemplate=(f"{r['method']}<br>{r['device']}<br>search %{{x:.1f}} s, "
                               f"{r['cost']} {r['cost_unit']}<br>{r['params']:,} params, "
                               f"{r['flops']:,} FLOPs<br>accuracy %{{y:.3f}}<extra></extra>")))
    fig.update_layout(title="Accuracy after retraining vs search cost",
                      xaxis=dict(title="search wall time (s, log)", type="log"),
                      yaxis=dict(title="test accuracy"), height=420,
                      legend=dict(font=dict(size=10)))
    return fig


def plot_seed_study(study):
    """Left: pairwise agreement of the genotypes found by different seeds (edges and ops);
    right: the search accuracy of every seed; with and without edge normalization."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(1, 2, subplot_titles=("agreement between seeds (pairs)",
                                              "accuracy per seed"))
    for norm, color in ((True, "#1f77b4"), (False, "#ff7f0e")):
        name = "edge norm on" if norm else "edge norm off"
        pairs = [p for p in study["pairs"] if p["edge_norm"] == norm]
        for k, what in enumerate(("edge_fraction", "op_fraction")):
            fig.add_trace(go.Box(
                y=[p[what] for p in pairs], x=[("edges", "ops")[k]] * len(pairs), name=name,
                legendgroup=name, showlegend=k == 0, marker_color=color, boxpoints="all",
                offsetgroup=name), 1, 1)
        runs = [r for r in study["runs"] if r["edge_norm"] == norm]
        fig.add_trace(go.Scatter(
            x=[r["seed"] for r in runs], y=[r["accuracy"] for r in runs], mode="markers+lines",
            name=name, legendgroup=name, showlegend=False, marker=dict(size=10, color=color)),
            1, 2)
    fig.update_layout(boxmode="group", height=380, title="PC-DARTS over seeds")
    fig.update_yaxes(title_text="fraction of pairs that agree", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=2)
    fig.update_xaxes(title_text="seed", dtick=1, row=1, col=2)
    return fig


def plot_gaps(methods: dict, title="each search minus its random baseline at equal budget"):
    """One column per method: the gap (search minus its equal-budget random baseline) of
    every search seed as a dot, their mean as a bar, and a gray band of +-1 seed SD of one
    training where the method's table gives it (a gap inside the band is noise).
    ``methods``: ``{name: {"gaps": [...], "seeds": [...], "noise": sd or None, "what": hover
    text}}`` (``seeds`` labels the dots; default 0, 1, ...)."""
    import numpy as np
    import plotly.graph_objects as go

    fig = go.Figure()
    names = list(methods)
    for i, name in enumerate(names):
        m = methods[name]
        color = _COLORS.get(name, "gray")
        if m.get("noise"):
            fig.add_shape(type="rect", x0=i - 0.4, x1=i + 0.4, y0=-m["noise"], y1=m["noise"],
                          fillcolor="#999999", opacity=0.2, line_width=0)
        fig.add_trace(go.Bar(x=[name], y=[float(np.mean(m["gaps"]))], name=name,
                             marker_color=color, opacity=0.45, showlegend=False,
                             hovertemplate=f"{name}: mean gap %{{y:+.4f}}<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=[name] * len(m["gaps"]), y=m["gaps"], mode="markers", showlegend=False,
            marker=dict(size=10, color=color, line=dict(width=1, color="white")),
            text=[f"seed {k}" for k in m.get("seeds", range(len(m["gaps"])))],
            hovertemplate="%{text}: %{y:+.4f}<br>" + m.get("what", "") + "<extra></extra>"))
    fig.add_hline(y=0, line_color="#444444")
    fig.update_layout(title=title, height=380, yaxis_title="accuracy gap (search - random)",
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig


def plot_intervals(effects: dict, title="each search against random search, judged by truth",
                   unit="difference in truth (search - random)"):
    """A forest plot: one row per study, its mean effect as a dot and its 95% interval
    (bootstrap over search seeds, :func:`nas_tutorial.run.compare.interval`) as a bar, the
    zero line drawn: an interval across it means the seeds do not show an effect.
    ``effects``: ``{label: {"mean", "low", "high", "n"}}``, all in the one ``unit``."""
    import plotly.graph_objects as go

    labels = list(effects)[::-1]  # the first at the top
    fig = go.Figure()
    for label in labels:
        e = effects[label]
        color = "#888888" if e["low"] <= 0 <= e["high"] else "#1f77b4"
        fig.add_trace(go.Scatter(
            x=[e["mean"]], y=[label], mode="markers", showlegend=False,
            marker=dict(size=11, color=color),
            error_x=dict(type="data", symmetric=False, array=[e["high"] - e["mean"]],
                         arrayminus=[e["mean"] - e["low"]], color=color, thickness=2, width=8),
            hovertemplate=(f"{label}: %{{x:+.4f}}, 95% interval [{e['low']:+.4f}, "
                           f"{e['high']:+.4f}] over {e['n']} seeds<extra></extra>")))
    fig.add_vline(x=0, line_color="#444444")
    fig.update_layout(title=title, height=120 + 60 * len(labels), xaxis_title=unit,
                      margin=dict(l=220, r=30, t=60, b=50))
    return fig


def plot_placement(table, groups: dict, baseline: dict | None = None,
                   title="found cells among the table's random cells"):
    """Where found cells land among the table's random cells, on one accuracy axis: every
    single training of a random cell (``table.trainings()``: gray strip, its median dashed),
    random search at an equal budget when ``baseline`` gives it (the dict of
    :func:`nas_tutorial.compare.random_search`, with ``n``, ``mean``, ``q5``, ``q95``: 5-95%
    band, mean line), and one marker per search seed for each entry of ``groups``
    (``{label: [{"seed", "retrain_accuracy", "reference_percentile"}, ...]}``), with the
    group's mean. ``nas_tutorial.compare.plot_placement(table, groups, best_of=n)``
    computes the baseline and calls this."""
    import numpy as np
    import plotly.graph_objects as go

    ref = table.trainings()
    fig = go.Figure()
    rows = list(groups) + ["random cells"]
    fig.add_trace(go.Scatter(
        x=ref, y=["random cells"] * len(ref), mode="markers", name="random cell (one training)",
        marker=dict(color="#888888", size=9, opacity=0.5, symbol="line-ns-open",
                    line=dict(width=2)),
        hovertemplate="random cell: %{x:.4f}<extra></extra>"))
    median = float(np.median(ref))
    fig.add_vline(x=median, line_dash="dash", line_color="#666666",
                  annotation_text=f"random median {median:.3f}", annotation_position="top")
    if baseline:
        b = baseline
        fig.add_vrect(x0=b["q5"], x1=b["q95"], fillcolor="#ff7f0e", opacity=0.12, line_width=0)
        fig.add_vline(x=b["mean"], line_color="#ff7f0e")
        # named in the legend: an annotation at the axis's foot collides with its tick labels
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="lines", line=dict(color="#ff7f0e", width=2),
            name=f"random search, best of {b['n']} (equal budget): mean {b['mean']:.3f}, "
                 "band 5-95%"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for i, (label, runs) in enumerate(groups.items()):
        acc = [r["retrain_accuracy"] for r in runs]
        fig.add_trace(go.Scatter(
            x=acc, y=[label] * len(acc), mode="markers", name=label,
            marker=dict(size=12, color=palette[i % len(palette)]),
            text=[f"seed {r['seed']}: {r['reference_percentile']:.0f}th percentile"
                  for r in runs],
            hovertemplate="%{text}<br>accuracy %{x:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=[float(np.mean(acc))], y=[label], mode="markers", showlegend=False,
            marker=dict(size=18, color=palette[i % len(palette)], symbol="line-ns",
                        line=dict(width=3, color=palette[i % len(palette)])),
            hovertemplate=f"{label}: mean %{{x:.4f}}<extra></extra>"))
    # the legend goes under the axis: beside it, it and the group labels squeeze the axis
    fig.update_layout(title=title, height=230 + 45 * len(rows), xaxis_title="test accuracy "
                      "after retraining (the table's protocol)",
                      yaxis=dict(categoryorder="array", categoryarray=rows[::-1]),
                      margin=dict(l=150, r=20, t=60, b=110),
                      legend=dict(font=dict(size=10), orientation="h", yanchor="top", y=-0.35))
    return fig
