"""PC-DARTS (and DARTS) figures: how the architecture weights evolve over a search
(:mod:`nas_tutorial.pc_darts`), the cell derived at each epoch, and the skip-connect collapse.

Each function takes a search history (a :class:`~nas_tutorial.pc_darts.SearchHistory`, read
by its fields) and returns a plotly figure; nothing is written here. plotly and ipywidgets
are imported inside the functions.
"""
from __future__ import annotations

from .notebook import controls
from .shared import OP_COLORS, add_band, draw_genotype, has_dot


def _steps_from_edges(n_edges: int) -> int:
    steps, total = 0, 0
    while total < n_edges:
        total += 2 + steps
        steps += 1
    return steps


def edge_labels(n_edges: int) -> list:
    """'k-2 -> 0', 'k-1 -> 0', 'k-2 -> 1', ..., '2 -> 3': one label per edge, in alpha order."""
    labels = []
    for i in range(_steps_from_edges(n_edges)):
        for j in range(2 + i):
            src = "k-2" if j == 0 else "k-1" if j == 1 else str(j - 2)
            labels.append(f"{src} -> {i}")
    return labels


def edge_weights(history, cell: str = "normal", epoch: int = -1, effective: bool = True):
    """(E, n_ops) op weights of ``cell`` at ``epoch`` (an index into the history): softmax
    (alpha), times the per-node softmax(beta) of the edge when ``effective`` and the run
    used edge normalization (PC-DARTS Sec. 3.3: the weights the derivation ranks)."""
    alpha = getattr(history, f"alpha_{cell}")[epoch]
    beta = getattr(history, f"beta_{cell}")[epoch] if history.beta_normal else None
    if not effective or beta is None:
        return [list(row) for row in alpha]
    return [[a * b for a in row] for row, b in zip(alpha, beta)]


def plot_alpha_evolution(history, cell: str = "normal", effective: bool = True,
                         title: str | None = None):
    """One small panel per edge (rows = nodes, columns = inputs): each op's weight over the
    epochs. With edge normalization the weights are softmax(beta) * softmax(alpha)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ops = list(history.primitives)
    n_edges = len(getattr(history, f"alpha_{cell}")[0])
    steps = _steps_from_edges(n_edges)
    labels = edge_labels(n_edges)
    titles, pos = [], []
    e = 0
    for i in range(steps):
        row = []
        for j in range(steps + 1):
            row.append(labels[e + j] if j < 2 + i else "")
        titles += row
        pos += [(i + 1, j + 1) for j in range(2 + i)]
        e += 2 + i
    fig = make_subplots(rows=steps, cols=steps + 1, subplot_titles=titles,
                        shared_xaxes=True, vertical_spacing=0.08, horizontal_spacing=0.07)
    series = [edge_weights(history, cell, t, effective) for t in range(len(history.epoch))]
    for e, (r, c) in enumerate(pos):
        for o, op in enumerate(ops):
            fig.add_trace(go.Scatter(
                x=list(history.epoch), y=[w[e][o] for w in series], mode="lines",
                name=op, legendgroup=op, showlegend=e == 0,
                line=dict(color=OP_COLORS.get(op, "#555555"), width=1.6,
                          dash="dot" if op == "none" else "solid")), row=r, col=c)
    kind = "softmax(beta)*softmax(alpha)" if effective and history.beta_normal else "softmax(alpha)"
    fig.update_layout(title=title or f"{cell} cell: {kind} per edge over epochs",
                      height=170 * steps + 80, margin=dict(l=40, r=20, t=70, b=40),
                      legend=dict(orientation="h", y=-0.08))
    fig.update_annotations(font_size=11)
    # few, short ticks: a panel is about 130 px wide at the handout width, and its labels
    # must not run into the next panel
    fig.update_yaxes(nticks=4, tickfont_size=9, tickformat=".3~f")
    return fig


def plot_alpha_heatmap(history, epoch: int = -1, effective: bool = True):
    """Heatmaps (edges x ops) of the normal and reduction cell weights at one epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ops = list(history.primitives)
    n = len(history.epoch)
    index = epoch if epoch < 0 else epoch - 1  # epochs count from 1
    shown = history.epoch[index]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("normal", "reduce"),
                        horizontal_spacing=0.12)
    for c, cell in enumerate(("normal", "reduce")):
        w = edge_weights(history, cell, index, effective)
        fig.add_trace(go.Heatmap(z=w, x=ops, y=edge_labels(len(w)), coloraxis="coloraxis",
                                 hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=c + 1)
    fig.update_yaxes(autorange="reversed")
    kind = "softmax(beta)*softmax(alpha)" if effective and history.beta_normal else "softmax(alpha)"
    fig.update_layout(title=f"{kind} at epoch {shown} of {n}", height=120 + 24 * len(w),
                      coloraxis=dict(colorscale="Viridis"), margin=dict(l=60, r=20, t=70, b=80))
    return fig


def alpha_slider(history, effective: bool = True) -> None:
    """An epoch slider (ipywidgets) that redraws the weight heatmap and the cell derived at
    that epoch, in place below it (``nas_tutorial.notebook.controls``: the saved notebook
    keeps the last epoch's picture). The cells come from ``history.genotypes()`` (one per
    epoch). Displays; returns None."""
    import ipywidgets as widgets

    genotypes = history.genotypes()

    def show(epoch):
        genotype = genotypes[epoch - 1]
        cell = (draw_genotype(genotype, title=f"derived at epoch {epoch}") if has_dot()
                else f"derived at epoch {epoch}: {genotype}")
        return plot_alpha_heatmap(history, epoch, effective), cell

    slider = widgets.IntSlider(value=len(history.epoch), min=1, max=max(1, len(history.epoch)),
                               description="epoch", continuous_update=False)
    controls(show, epoch=slider)


def skip_counts(history, cell: str = "normal") -> list:
    """skip_connect edges in the cell derived at each epoch."""
    return [sum(op == "skip_connect" for op, _ in g[cell]) for g in history.genotype]


def plot_skip_monitor(history, cell: str = "normal"):
    """Skip connections in the derived ``cell`` per epoch; red markers where the count
    climbs (the collapse DARTS is known for: parameter-free skips crowd out the convs)."""
    import plotly.graph_objects as go

    counts = skip_counts(history, cell)
    epochs = list(history.epoch)
    up = [k for k in range(1, len(counts)) if counts[k] > counts[k - 1]]
    fig = go.Figure(go.Scatter(x=epochs, y=counts, mode="lines+markers", name="skips",
                               line=dict(color=OP_COLORS["skip_connect"])))
    if up:
        fig.add_trace(go.Scatter(x=[epochs[k] for k in up], y=[counts[k] for k in up],
                                 mode="markers", name="climbs",
                                 marker=dict(color="#cc0000", size=12, symbol="triangle-up")))
    n_pairs = len(history.genotype[0][cell]) if history.genotype else 0
    fig.update_layout(title=f"skip_connect in the derived {cell} cell"
                      + (" - climbing!" if up else ""),
                      xaxis_title="epoch", yaxis=dict(title="skips", range=[-0.2, n_pairs + 0.2]),
                      height=300, margin=dict(l=40, r=20, t=60, b=40))
    return fig


def plot_collapse(groups: dict, title="collapse and its cure, over seeds"):
    """Two panels over the search epochs, one band (mean, min-max over seeds) per entry of
    ``groups`` (``{label: [run, ...]}``, each run with ``param_free_per_epoch`` and
    ``skips_per_epoch`` as ``summary.json`` and the recorded studies hold them): the
    parameter-free ops (pools, skips) of the derived normal cell, and its skip_connects."""
    from plotly.subplots import make_subplots

    if not groups or any(not runs for runs in groups.values()):
        raise ValueError("plot_collapse needs at least one run in every group")
    fig = make_subplots(1, 2, subplot_titles=("parameter-free ops in the normal cell",
                                              "skip_connect in the normal cell"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    top = 0
    for i, (label, runs) in enumerate(groups.items()):
        for col, key in ((1, "param_free_per_epoch"), (2, "skips_per_epoch")):
            curves = [r[key] for r in runs]
            n = min(len(c) for c in curves)
            top = max(top, *(max(c[:n]) for c in curves))
            add_band(fig, range(1, n + 1), [c[:n] for c in curves],
                     f"{label} ({len(runs)} seeds)", palette[i % len(palette)], row=1, col=col)
    for col in (1, 2):  # one legend entry per group
        for t in fig.select_traces(col=col):
            t.showlegend = col == 1 and t.showlegend is not False
    fig.update_xaxes(title_text="search epoch", dtick=1)
    fig.update_yaxes(range=[-0.2, top + 0.5])
    fig.update_layout(title=title, height=340, margin=dict(l=40, r=20, t=70, b=40))
    return fig


def plot_search_step_record(run: dict):
    """A recorded ``make bench`` run (``nas_tutorial.runs.load_runs("benchmarks")``) per K:
    the operators one search step dispatches (batch 8, one thread: fused and unfused cells)
    and the step time (the record's batch and threads: fused cells, unfused cells, the
    official-style step). Log scale for the operators: they differ fourfold."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r["raw"] for r in run["payload"]["rows"]
            if "step_s" in r.get("raw", {}) and "k" in r["raw"] and "impl" not in r["raw"]]
    ks = [f"K={r['k']}" for r in rows]
    fig = make_subplots(1, 2, subplot_titles=("operators per step", "seconds per step"),
                        horizontal_spacing=0.14)
    series = [("fused cells", "ops_b8_fused", "#228833"), ("unfused cells", "ops_b8_unfused",
                                                             "#ccbb44")]
    for name, key, color in series:
        fig.add_bar(x=ks, y=[r.get(key) for r in rows], name=name, marker_color=color,
                    legendgroup=name, row=1, col=1)
    times = [("fused cells", lambda r: r.get("cells", {}).get("fused_s"), "#228833"),
             ("unfused cells", lambda r: r.get("cells", {}).get("unfused_s"), "#ccbb44"),
             ("official-style", lambda r: r.get("official_step_s"), "#bbbbbb")]
    for name, get, color in times:
        fig.add_bar(x=ks, y=[get(r) for r in rows], name=name, marker_color=color,
                    legendgroup=name, showlegend=name == "official-style", row=1, col=2)
    batch = rows[0].get("batch") if rows else "?"
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="operators: batch 8, one thread", row=1, col=1)
    fig.update_xaxes(title_text=f"time: batch {batch}, {rows[0].get('threads', '?')} threads"
                     if rows else "time", row=1, col=2)
    fig.update_layout(barmode="group", height=360, title="one search step, recorded",
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=60, r=20, t=80, b=40))
    return fig
