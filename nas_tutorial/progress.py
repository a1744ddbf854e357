"""Progress bars that read well in a terminal and in a notebook, and warn about long runs.

Every loop longer than a few seconds shows one (training, searches, tables). In a Jupyter
kernel the bar is text updated in place and, when it ends, one line: what ran and how long
(never a frozen ``0%|`` widget in a saved notebook). After its first steps a bar estimates
the whole run once and says so when it will take more than an hour.
"""
from __future__ import annotations

import io


def in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbconvert, nbval), False in a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


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
