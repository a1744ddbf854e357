"""Run folders and checkpoints, checked before a run does any work.

Every verb of the command line that writes a run folder (``search pc-darts|darts|spos|pnas``,
``train``) asks this module first, so that a refused run creates and changes nothing:

- a new run (``--out``, or the default folder) needs a folder that is not a file, that can
  be created and written, and that holds no run already, unless ``--overwrite`` (which
  deletes the files a run writes there, and only those);
- a resumed run (``--resume DIR``) needs a folder holding a readable checkpoint of the same
  method with the keys that method saves, and every flag given beside ``--resume`` must say
  what the saved config says (:func:`check_flags`, :func:`check_preset`).

Every refusal is a :class:`RunFolderError`, one line that names the file or flag and what to
do; the CLI prints it and exits with code 2.

Once every check has passed, a run *claims* its folder (:func:`claim`; a table claims its
file): one process at a time writes there, so two runs started into one folder cannot
overwrite each other's files; the second is refused at once, naming the first.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

try:  # the OS drops the lock of a process that dies, even by SIGKILL (not on Windows)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

# the checkpoint reader lives with the atomic writers; run folders re-export it
from ..checkpoints import CHECKPOINTS, RunFolderError, read_checkpoint  # noqa: F401


# Every file each verb writes into its run folder (the test of each verb checks that its run
# writes nothing else). A folder holding any of them holds a run.
RUN_FILES = {
    "pc-darts": ("checkpoint.pt", "history.json", "genotype.json", "summary.json", "normal.svg",
                 "reduce.svg", "alpha_normal.html", "alpha_reduce.html", "alpha_heatmap.html",
                 "skip_monitor.html"),
    "spos": ("supernet.pt", "fitness.json", "evolution.json", "random.json", "best_path.json",
             "evaluated.json", "summary.json", "pareto.html", "progress.html", "path.svg",
             "ranking.html"),
    "pnas": ("checkpoint.json", "best_cell.json", "cells.json", "summary.json",
             "predictions.html", "pnas_vs_random.html", "beams.svg", "best_cell.svg"),
    "train": ("genotype.json", "history.json", "cell.svg", "curves.html"),
}
RUN_FILES["darts"] = RUN_FILES["pc-darts"]

_STATE_FILES = {"checkpoint.pt": "pc-darts or darts", "supernet.pt": "spos",
                "checkpoint.json": "pnas"}


def run_files_in(folder) -> list:
    """The names of the run files (of any verb) that ``folder`` holds: checkpoints and
    results first (what a reader recognizes a run by), then the rest, sorted."""
    folder = Path(folder)
    names = {n for files in RUN_FILES.values() for n in files}
    first = [*_STATE_FILES, "genotype.json", "summary.json", "best_cell.json", "best_path.json"]
    return sorted((n for n in names if (folder / n).exists()),
                  key=lambda n: (first.index(n) if n in first else len(first), n))


def holds(folder) -> str | None:
    """Which method's resumable run ``folder`` holds (by its checkpoint file), or None."""
    for name, method in _STATE_FILES.items():
        if (Path(folder) / name).exists():
            return method
    return None


def _writable_parent(folder: Path, flag: str) -> None:
    """Refuse ``folder`` when it, or the nearest part of its path that exists, cannot be
    created or written. Creates nothing."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{flag} {folder} is a file, not a folder; name a folder")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunFolderError(f"cannot create the run folder {folder}: {probe} is a file; "
                             f"choose another {flag}")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "write to" if probe == folder else f"create {folder} in"
        raise RunFolderError(f"cannot {where} {probe}: permission denied; choose another {flag}")


def check_new(folder, method: str, overwrite: bool = False, flag: str = "--out",
              empty: bool = False) -> Path:
    """A folder for a new run of ``method``: usable, and holding no run (``empty``: nothing
    at all) unless ``overwrite``. Creates and deletes nothing (see :func:`clear`)."""
    folder = Path(folder)
    _writable_parent(folder, flag)
    check_free(folder, flag=flag)
    if folder.is_dir() and not overwrite:
        found = run_files_in(folder)
        if found:
            resumable = holds(folder)
            hint = (f"continue it with --resume {folder}, " if resumable and method in
                    resumable.split(" or ") else "")
            what = f"a {resumable} run" if resumable else "a run's files"
            raise RunFolderError(f"{folder} already holds {what} ({', '.join(found[:3])}"
                                 f"{', ...' if len(found) > 3 else ''}); {hint}replace it with "
                                 f"--overwrite, or choose another {flag}")
        names = sorted(p.name for p in folder.iterdir() if p.name != LOCK)
        if empty and names:
            raise RunFolderError(f"{folder} is not empty ({', '.join(names[:3])}"
                                 f"{', ...' if len(names) > 3 else ''}); replace its run files "
                                 f"with --overwrite, or choose another {flag}")
    return folder


def clear(folder) -> list:
    """``--overwrite``: delete the run files (of every verb, and their half-written
    ``.tmp`` copies) in ``folder``; anything else stays. Returns the deleted names."""
    folder = Path(folder)
    names = {n for files in RUN_FILES.values() for n in files}
    gone = []
    for name in sorted(names | {n + ".tmp" for n in names}):
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            gone.append(name)
    return gone


def check_resume(folder, method: str, out=None, overwrite: bool = False) -> Path:
    """The folder ``--resume`` names: a writable folder holding ``method``'s checkpoint."""
    if out is not None:
        raise RunFolderError(f"--out cannot go with --resume: a run continues in its own "
                             f"folder ({folder}); drop --out")
    if overwrite:
        raise RunFolderError("--overwrite cannot go with --resume: --resume continues the run "
                             "in the folder, --overwrite replaces it; choose one")
    folder = Path(folder)
    if not folder.exists():
        raise RunFolderError(f"no run folder at {folder}: nothing to resume")
    if not folder.is_dir():
        raise RunFolderError(f"--resume {folder} is a file; name the run's folder")
    check_free(folder, flag="--resume")
    name = CHECKPOINTS[method][0]
    if not (folder / name).exists():
        other = holds(folder)
        if other is not None:
            cmd = other.split(" or ")[0]
            raise RunFolderError(f"{folder} holds a {other} run, not a {method} one; resume it "
                                 f"with `nas-tutorial search {cmd} --resume {folder}`")
        raise RunFolderError(f"no {name} in {folder}: nothing to resume (a {method} run "
                             f"writes it after its first epoch); start a new run with --out")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write to {folder}: permission denied; a resumed run "
                             f"writes its checkpoints there")
    return folder


def check_flags(folder, saved: dict, given) -> None:
    """Refuse a flag given beside ``--resume`` that contradicts the saved config.

    ``given``: ``(flag, field, value)`` triples; ``value`` None means the flag was not
    given. The message names the flag, the saved value and the given one."""
    for flag, field, value in given:
        if value is None or field not in saved or saved[field] == value:
            continue
        shown = flag if isinstance(value, bool) else f"{flag} {value}"
        raise RunFolderError(f"{shown} contradicts the run in {folder} (it was made with "
                             f"{field}={saved[field]!r}, not {value!r}); drop {flag} to "
                             f"continue that run, or start a new one with --out")


def check_preset(folder, preset: str | None, saved: dict, presets: dict, flag_fields) -> None:
    """Refuse ``--preset`` beside ``--resume`` when the run was not made with that preset:
    its saved config must equal the preset's on every field that no flag sets.
    ``presets``: name -> config as a dict."""
    if preset is None:
        return
    made = preset_of(saved, presets, flag_fields)
    if made == preset or preset_of(saved, {preset: presets[preset]}, flag_fields):
        return
    made = f"preset={made!r}" if made else "the settings of no preset"
    raise RunFolderError(f"--preset {preset} contradicts the run in {folder} (it was made "
                         f"with {made}, not {preset!r}); drop --preset to continue that run, "
                         f"or start a new one with --out")


def preset_of(saved: dict, presets: dict, flag_fields) -> str | None:
    """The preset a saved config was made with: the one it equals on every field no flag
    sets (``presets``: name -> config as a dict), or None."""
    return next((n for n, d in presets.items()
                 if all(d.get(k) == v for k, v in saved.items() if k not in flag_fields)), None)


class RunFinished(RunFolderError):
    """``--resume`` of a run that has finished: nothing to do, and nothing is changed."""


def check_unfinished(folder, adds=()) -> None:
    """A run writes ``summary.json`` once it has finished: resuming it again would redo its
    last step and rewrite its results, so it is answered in one line instead, unless the
    resume adds a result the summary lacks (``adds``: its keys, e.g. ``--retrain``'s)."""
    summary = Path(folder) / "summary.json"
    if not summary.is_file():
        return
    try:
        results = json.loads(summary.read_text()).get("results", {})
    except (OSError, ValueError, AttributeError):
        results = {}
    if not all(k in results for k in adds):
        return
    raise RunFinished(f"the run in {summary.parent} has finished (its results are in "
                      f"{summary}); nothing to resume: start a new run with --out")


# -- one process per run folder ------------------------------------------------------------
LOCK = ".lock"


class Claim:
    """A folder or file held by this process (:func:`claim`); :meth:`release` lets it go
    (and removes a folder the claim created that is still empty)."""

    def __init__(self, target: Path, lock: Path, fd: int, created: Path | None):
        self.target, self.lock, self.fd, self.created = target, lock, fd, created

    def release(self) -> None:
        if self.fd is None:
            return
        self.lock.unlink(missing_ok=True)  # before the lock goes: no one takes a dead file
        os.close(self.fd)
        self.fd = None
        if self.created is not None:
            try:
                self.created.rmdir()  # only when the run wrote nothing there
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def check_free(target, kind: str = "folder", flag: str = "--out") -> None:
    """Refuse, before any other check, a folder (or table file) a live process holds
    (:func:`claim`), so the refusal names that process rather than the files it writes."""
    target = Path(target)
    lock = target / LOCK if kind == "folder" else target.with_name(target.name + ".lock")
    if fcntl is None or not lock.is_file():
        return
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        held = _holder(os.read(fd, 4096).decode("utf-8", "replace"))
        what = "run folder" if kind == "folder" else "table"
        raise RunFolderError(f"the {what} {target} is in use by {held}: two runs would "
                             f"overwrite each other's files; wait for it to end, or choose "
                             f"another {flag}") from None
    finally:
        os.close(fd)  # closing drops the shared lock taken to look


def _holder(text: str) -> str:
    try:
        d = json.loads(text)
        return f"process {d['pid']} on {d['host']} (since {d['started']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def claim(target, kind: str = "folder", flag: str = "--out") -> Claim:
    """Claim ``target`` for this process before any work: ``kind="folder"`` a run folder
    (created here if it does not exist, the lock ``target/.lock``), ``"file"`` a table file
    (the lock ``target.lock`` beside it). The lock file holds the PID, the host and the start
    time; the OS lock on it goes with the process, so a run killed without releasing it
    (SIGKILL, a crash) leaves a stale file that the next claim takes over, naming it. A
    target held by a live process is refused in one line (:class:`RunFolderError`)."""
    target = Path(target)
    folder = target if kind == "folder" else target.parent
    created = None
    if not folder.is_dir():
        top = folder
        while not top.parent.exists() and top.parent != top:
            top = top.parent  # the first part of the path that does not exist yet
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"cannot create {folder}: {e.strerror or e}; choose another "
                                 f"{flag}") from None
        created = folder if kind == "folder" and top == folder else None
    lock = folder / LOCK if kind == "folder" else target.with_name(target.name + ".lock")
    what = "run folder" if kind == "folder" else "table"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderError(f"cannot write the lock file {lock}: {e.strerror or e}; "
                                 f"choose another {flag}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = _holder(os.read(fd, 4096).decode("utf-8", "replace"))
                os.close(fd)
                raise RunFolderError(f"the {what} {target} is in use by {held}: two runs "
                                     f"would overwrite each other's files; wait for it to "
                                     f"end, or choose another {flag}") from None
        try:  # the file it locked may have been released and removed meanwhile: try again
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    old = os.read(fd, 4096).decode("utf-8", "replace").strip()
    if old:  # the file of a process that ended without releasing it
        print(f"note: {target} was locked by {_holder(old)}, which has ended without "
              f"releasing it; this run takes it over", file=sys.stderr)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.lseek(fd, 0, 0)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(me).encode())
    return Claim(target, lock, fd, created)
