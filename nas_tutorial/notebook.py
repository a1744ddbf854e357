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

import io
import os
import shutil
import sys

STATIC_ENV = "NAS_TUTORIAL_STATIC"   # "0": no static copies of figures (tests run faster)


def in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbconvert, nbval), False in a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def set_threads(n: int | None = 1) -> int:
    """Torch's CPU intra-op threads, one rule for the notebooks and the CLI: the networks
    here are tiny, and on a small CPU one thread per training is the fastest (measured on 2
    cores: 12 s an epoch of notebook 00 with one thread, 155 s with two on a busy machine);
    ``None`` keeps torch's default."""
    import torch

    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


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
                handle.update(item)

    render()
    if run is not None:
        run.on_click(render)
    else:
        for w in widgets.values():
            w.observe(render, names="value")
    return None


# -- progress -------------------------------------------------------------------------------
def _bar_base():
    from tqdm.std import tqdm

    return tqdm


class _NotebookBarMixin:
    """Text bar updated in place in a kernel; at the end, one line: what ran, how long."""

    def display(self, msg=None, pos=None):
        from IPython.display import Pretty, display

        text = msg if msg is not None else self.format_meter(**self.format_dict)
        if getattr(self, "_handle", None) is None:
            self._handle = display(Pretty(text), display_id=True)
        else:
            self._handle.update(Pretty(text))
        return True

    def close(self):
        if self.disable or getattr(self, "_closed_line", False):
            return super().close()
        self._closed_line = True
        d = self.format_dict
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        postfix = f" ({d['postfix']})" if d.get("postfix") else ""
        elapsed = self.format_interval(d["elapsed"])
        super().close()
        self.display(f"{self.desc or 'done'}: {done} {d.get('unit', 'it')} in {elapsed}"
                     f"{postfix}")


def NotebookBar(*args, **kwargs):
    """A tqdm bar for a Jupyter kernel (see :class:`_NotebookBarMixin`)."""
    base = _bar_base()
    cls = type("NotebookBar", (_NotebookBarMixin, base), {})
    kwargs.setdefault("mininterval", 0.5)
    kwargs["file"] = io.StringIO()  # tqdm's own writer goes nowhere; display() shows it
    return cls(*args, **kwargs)


LONG_RUN_S = 3600     # a run estimated longer than this gets a one-line warning
ESTIMATE_AFTER = 3    # steps timed before the estimate


def progress_bar(total=None, desc: str = "", enabled: bool = True, **kwargs):
    """The project's progress bar: :func:`NotebookBar` in a kernel, tqdm text elsewhere.
    After its first :data:`ESTIMATE_AFTER` steps it estimates the whole run once; above
    :data:`LONG_RUN_S` it says so in one line (a ``full`` preset started on a CPU would
    otherwise run for hours without a word)."""
    kwargs.setdefault("leave", True)
    if enabled and in_kernel():
        bar = NotebookBar(total=total, desc=desc, **kwargs)
    else:
        bar = _bar_base()(total=total, desc=desc, disable=not enabled, **kwargs)
    return _with_estimate(bar)


def run_estimate(elapsed: float, done: int, total: int) -> str | None:
    """The warning for a run that has taken ``elapsed`` seconds for ``done`` of ``total``
    steps, or None when it will end within :data:`LONG_RUN_S`."""
    if not done or not total:
        return None
    per_step = elapsed / done
    whole = per_step * total
    if whole <= LONG_RUN_S:
        return None
    return (f"this run will take about {whole / 3600:.1f} h at its present pace ({per_step:.2g} s "
            f"a step, {total:,} steps); on a CPU, --preset quick (or the quick preset in a "
            f"notebook) runs in minutes")


def _with_estimate(bar):
    update = bar.update
    state = {"done": False}

    def update_and_estimate(n=1):
        out = update(n)
        if bar.disable or state["done"] or not bar.total:
            return out  # a silent bar stays silent (a disabled tqdm keeps no `initial`)
        first = getattr(bar, "initial", 0)  # a resumed run's bar starts past 0
        if bar.n - first >= ESTIMATE_AFTER:
            state["done"] = True  # once: an estimate, not a running commentary
            note = run_estimate(bar.format_dict["elapsed"], bar.n - first, bar.total - first)
            if note:
                bar.write(f"{bar.desc}: {note}")
        return out

    bar.update = update_and_estimate
    return bar


__all__ = ["setup", "set_threads", "in_kernel", "controls", "show_widget", "progress_bar",
           "run_estimate", "NotebookBar", "STATIC_ENV"]
