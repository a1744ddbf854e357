"""Figures and drawings, one module per method plus the shared drawing.

- :mod:`~nas_tutorial.viz.shared`: the op palette (``OP_COLORS``), cells drawn with
  graphviz (``draw_cell``, ``draw_genotype``), training curves (``plot_history``,
  ``LivePlot``), mean-and-band curves (``add_band``), and ``save_svg``/``save_html``;
- :mod:`~nas_tutorial.viz.pc_darts`, :mod:`~nas_tutorial.viz.spos`,
  :mod:`~nas_tutorial.viz.pnas`: each method's figures (``nt.spos_viz`` and ``nt.pnas_viz``
  name the last two, as before);
- :mod:`~nas_tutorial.viz.compare`: the comparison's figures (also ``cmp.plot_*``).

Every function returns a figure (plotly) or a ``graphviz.Digraph`` and writes nothing but
through ``save_svg``/``save_html``. plotly, graphviz and ipywidgets are imported inside the
functions that use them, so the algorithms and the training loop never load them. This
package loads ``shared`` and ``pc_darts`` only (``nt.viz.draw_cell``,
``nt.viz.plot_alpha_evolution``, ...); the other figure modules import their method's
module, so they load when named.
"""
from .pc_darts import (alpha_slider, edge_labels, edge_weights, plot_alpha_evolution,
                       plot_alpha_heatmap, plot_collapse, plot_skip_monitor, skip_counts)
from .shared import (OP_COLORS, LivePlot, add_band, add_cell, draw_cell, draw_genotype,
                     has_dot, new_digraph, plot_history, save_html, save_svg)

__all__ = [
    "OP_COLORS", "LivePlot", "add_band", "add_cell", "draw_cell", "draw_genotype", "has_dot",
    "new_digraph", "plot_history", "save_html", "save_svg",
    "alpha_slider", "edge_labels", "edge_weights", "plot_alpha_evolution", "plot_alpha_heatmap",
    "plot_collapse", "plot_skip_monitor", "skip_counts",
]
