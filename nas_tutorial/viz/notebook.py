"""How the notebooks show things, live in JupyterLab and saved in the .ipynb file.

No paper here: this module only decides how figures, drawings, widgets and progress bars
appear, so that a notebook reads the same in JupyterLab, in an HTML export, on GitHub and in
an untrusted copy opened without a kernel.

- :func:`setup` (the first cell of every notebook): the CPU thread count, and plotly figures
  saved with a static PNG copy beside the interactive one (rendered by kaleido with the
  system's Chromium; without them the figures stay interactive-only and a line says so).
- :func:`controls`: widgets whose result (figure, drawing, text) is shown as ordinary
  outputs redrawn in place. A saved notebook therefore keeps the picture of the current
  setting, where an ipywidgets ``Output`` area would keep nothing.
- :class:`NotebookBar`: the progress bar used inside a kernel: text updated in place while it
  runs, one line when it ends (what ran, how long), never a frozen ``0%|`` widget.

Graphviz drawings carry a PNG beside their SVG (:class:`nas_tutorial.viz.Drawing`) for the
same reason: an untrusted notebook shows images, not SVG.
"""
from __future__ import annotations

import os
import shutil
import sys

from ..devices import set_threads  # noqa: F401  (nt.notebook.set_threads, as before)
from ..progress import NotebookBar, in_kernel, progress_bar, run_estimate  # noqa: F401

STATIC_ENV = "NAS_TUTORIAL_STATIC"   # "0": no static copies of figures (tests run faster)


def chromium() -> str | None:
    """The system's Chromium (or Chrome), for kaleido and the handout check; None if absent."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _start_static_figures() -> str | None:
    """Make plotly save a PNG beside each interactive figure; None if it works, else why."""
    try:
        import kaleido
        import plotly.io as pio
    except ImportError:
        return "kaleido is not installed (pip install kaleido)"
    browser = chromium()
    if browser is None:
        return "no Chromium for kaleido (apt-get install chromium)"
    os.environ.setdefault("BROWSER_PATH", browser)
    try:
        # One browser for the whole notebook: 0.2 s a figure instead of 3.5 s.
        kaleido.start_sync_server(silence_warnings=True)
    except RuntimeError:
        pass  # already running (setup called twice)
    except Exception as e:  # a broken browser must not stop the notebook
        return f"kaleido could not start Chromium ({type(e).__name__})"
    import warnings

    # plotly passes its default export options with every figure; the server has its own
    warnings.filterwarnings("ignore", message="The kopts argument is ignored")
    png = pio.renderers["png"]
    png.width, png.height, png.scale = None, None, 1  # the figure's own size
    pio.renderers.default = "plotly_mimetype+png"
    return None


def setup(threads: int | None = 1, static: bool | None = None) -> None:
    """The first call of every notebook: CPU threads, and static copies of the figures.

    ``static=None`` follows ``$NAS_TUTORIAL_STATIC`` (on unless it is ``0``); static copies
    need kaleido and Chromium and cost about 0.2 s a figure.
    """
    set_threads(threads)
    if static is None:
        static = os.environ.get(STATIC_ENV, "1") != "0"
    if not static:
        if "plotly.io" in sys.modules:  # undo an earlier setup(static=True)
            sys.modules["plotly.io"].renderers.default = "plotly_mimetype"
        return
    why = _start_static_figures()
    if why:
        print(f"figures: interactive only ({why}); they show in JupyterLab, not in exports")


# -- widgets --------------------------------------------------------------------------------
def _describe(widget) -> str:
    parts = []
    for w in getattr(widget, "children", ()):
        desc, value = getattr(w, "description", ""), getattr(w, "value", None)
        if desc and value is not None and not hasattr(w, "on_click"):
            parts.append(f"{desc} = {value!r}")
        elif getattr(w, "children", None):
            parts.append(_describe(w))
    return ", ".join(p for p in parts if p)


def show_widget(widget, text: str | None = None) -> None:
    """Display ``widget`` with a one-line text version (``text``, or its controls and their
    values): what a reader without a kernel sees instead of ``HBox(children=(...``."""
    from IPython.display import display

    described = _describe(widget)
    text = text or (f"[controls: {described}; run the notebook to use them]" if described
                    else "[interactive controls; run the notebook to use them]")
    display({"application/vnd.jupyter.widget-view+json": {
        "model_id": widget.model_id, "version_major": 2, "version_minor": 0},
        "text/plain": text}, raw=True)


class _Bundle:
    """Shows ``obj`` through its ``_repr_mimebundle_`` only. A plotly figure displays itself
    through ``_ipython_display_``, which drops the display id: the update then appends a
    second figure instead of replacing the first."""

    def __init__(self, obj):
        self.obj = obj

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = self.obj._repr_mimebundle_(include=include, exclude=exclude)
        return {**bundle, "text/plain": repr(self)}

    def __repr__(self) -> str:
        title = getattr(getattr(getattr(self.obj, "layout", None), "title", None), "text", None)
        return f"[figure: {title}]" if title else "[figure]"


def displayable(item):
    """What ``display(..., display_id=True)`` can show and later replace in place."""
    from IPython.display import Pretty

    if isinstance(item, str):
        return Pretty(item)
    if hasattr(item, "_ipython_display_") and hasattr(item, "_repr_mimebundle_"):
        return _Bundle(item)
    return item


def replace(handle, item) -> None:
    """Show ``item`` in the place of the output ``handle`` shows, as a new output.

    ``handle.update(item)`` alone asks the front end to update the rendered output in
    place, and JupyterLab hands it to the renderer it already has (same mime type): the
    plotly renderer ignores it once the learner has hovered over the figure, which is then
    interactive and stuck at its first state. JupyterLab reuses a renderer only while the
    preferred mime type stays the same (``OutputArea._setOutput``), so a plain-text
    placeholder first, then ``item``, makes it build a fresh renderer each time. The saved
    notebook keeps the last one."""
    from IPython.display import Pretty

    handle.update(Pretty("[redrawing]"))
    handle.update(item)


def controls(fn, manual: bool = False, **widgets):
    """Show ``widgets`` and ``fn(**their values)`` below them, redrawn in place.

    ``fn`` returns what to show: a figure, a drawing, a string, or a tuple of them (always
    the same number). It runs once now, so the saved notebook holds the current setting's
    output; afterwards on every change, or on the **Run** button when ``manual``. Displays
    everything itself and returns None (a returned widget would show a second time).
    """
    import ipywidgets as W
    from IPython.display import display

    run = W.Button(description="Run", button_style="primary") if manual else None
    box = W.HBox(list(widgets.values()) + ([run] if run is not None else []),
                 layout=W.Layout(flex_flow="row wrap"))
    show_widget(box)
    handles = []

    def render(*_):
        out = fn(**{name: w.value for name, w in widgets.items()})
        items = [displayable(x) for x in (out if isinstance(out, tuple) else (out,))]
        if not handles:
            handles.extend(display(x, display_id=True) for x in items)
        else:
            for handle, item in zip(handles, items):
                replace(handle, item)

    render()
    if run is not None:
        run.on_click(render)
    else:
        for w in widgets.values():
            w.observe(render, names="value")
    return None


__all__ = ["setup", "set_threads", "in_kernel", "controls", "replace", "show_widget", "progress_bar",
           "run_estimate", "NotebookBar", "STATIC_ENV"]
