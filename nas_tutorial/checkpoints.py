"""Files that survive an interrupt: write a temporary file, then rename it over the old one.

``os.replace`` is atomic on one filesystem, so a Ctrl-C in a notebook or a killed CLI run
leaves either the previous checkpoint or the new one, never half of one; every search
resumes from what these functions wrote. :func:`read_checkpoint` is the one reader of a
method's checkpoint: every resume (a search, the CLI's checks, a cached SPOS supernet) reads
it through here and gets one line naming the file when it cannot be used.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch


class RunFolderError(ValueError):
    """A run folder or checkpoint that cannot be used; the message says why and what to do."""


# The checkpoint a resumed run starts from: file, format, the keys it must hold, and the
# method's other state files that a resume reads (JSON; each must parse).
CHECKPOINTS = {
    "pc-darts": ("checkpoint.pt", "torch", ("config", "epoch", "model", "w_optimizer",
                                            "a_optimizer", "scheduler", "train_loader",
                                            "valid_loader", "rng", "history"), ()),
    "spos": ("supernet.pt", "torch", ("config", "epoch", "model", "history"),
             ("fitness.json", "evolution.json", "random.json")),
    "pnas": ("checkpoint.json", "json", ("config", "children"), ()),
}
CHECKPOINTS["darts"] = CHECKPOINTS["pc-darts"]


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)``, then move the result to ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def finite(obj):
    """``obj`` with every NaN or infinite float replaced by None, at any depth: strict JSON
    (``NaN`` is not JSON, and other readers refuse it)."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path, obj, indent: int = 1, strict: bool = False) -> Path:
    """Write ``obj`` as JSON atomically; ``strict``: non-finite floats become null."""
    if strict:
        obj = finite(obj)
    text = json.dumps(obj, indent=indent, allow_nan=not strict) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


def save(obj, path) -> Path:
    """``torch.save`` with an atomic rename."""
    return atomic_write(path, lambda p: torch.save(obj, p))


# A field only each method's config has: a checkpoint of another method is named as such.
_MARKS = {"pc-darts": "k", "spos": "supernet", "pnas": "beam"}
_MARKS["darts"] = _MARKS["pc-darts"]
# What the checked keys hold (a hand-edited or foreign file fails here, in one line).
_KINDS = {"epoch": (int, "an epoch count"), "model": (Mapping, "a state dict"),
          "history": (dict, "a history"),
          "children": (dict, "a mapping from cells to accuracies")}


def read_checkpoint(folder, method: str) -> dict:
    """``method``'s checkpoint in ``folder``, read and checked: a readable file of the
    method's format holding its keys; the method's other state files must parse. Raises
    FileNotFoundError when there is none, :class:`RunFolderError` naming the file else."""
    name, fmt, keys, extra = CHECKPOINTS[method]
    path = Path(folder) / name
    if Path(folder).is_file() or Path(folder).name == name:  # the file itself was named
        path, folder = Path(folder), Path(folder).parent
    if not path.is_file():
        raise FileNotFoundError(f"no {name} in {folder}: nothing to resume")
    if path.stat().st_size == 0:
        raise RunFolderError(f"{path} is empty (a run killed while writing it?); start a new "
                             f"run with --out")
    try:
        if fmt == "torch":
            state = torch.load(path, map_location="cpu", weights_only=False)
        else:
            state = json.loads(path.read_text())
    except Exception as e:  # torch.load raises many kinds (zip, pickle, EOF, ...) on bad input
        raise RunFolderError(f"cannot read {path}: not a complete {method} checkpoint "
                             f"({type(e).__name__}); it may be truncated or another file; "
                             f"start a new run with --out") from None
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
    if missing:
        raise RunFolderError(f"{path} is not a {method} checkpoint: it lacks "
                             f"{', '.join(missing)}; start a new run with --out")
    if not isinstance(state["config"], dict):
        raise RunFolderError(f"{path} is not a {method} checkpoint: its config is not a "
                             f"mapping; start a new run with --out")
    other = next((m for m, f in _MARKS.items() if f in state["config"]), None)
    if other is not None and _MARKS.get(method) not in state["config"]:
        raise RunFolderError(f"{path} holds a {other} checkpoint, not a {method} one (a "
                             f"renamed file?); start a new run with --out")
    for k in keys:
        kind, what = _KINDS.get(k, (object, ""))
        v = state[k]
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)) or (
                k == "epoch" and v < 0) or (k == "children" and not all(
                isinstance(a, (int, float)) for a in v.values())):
            raise RunFolderError(f"{path} is damaged: its {k} is {type(v).__name__} "
                                 f"{str(v)[:40]!r}, not {what}; start a new run with --out")
    for other in extra:
        p = Path(folder) / other
        if p.exists():
            try:
                ok = isinstance(json.loads(p.read_text()), dict)
            except (OSError, UnicodeDecodeError, ValueError):
                ok = False
            if not ok:
                raise RunFolderError(f"cannot read {p}: not a JSON object (truncated?); "
                                     f"delete it to recompute it, or start a new run with --out")
    return state


def fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights and buffers: names a trained network exactly (a
    fitness cache belongs to one supernet)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def capture(parts: dict, **extra) -> dict:
    """A training's resume state: ``state_dict()`` of each of ``parts`` (model, optimizers,
    schedulers, loaders) under its key, plus ``extra`` (epoch, config, RNG, history)."""
    return {**{k: v.state_dict() for k, v in parts.items()}, **extra}


def restore(state: dict, parts: dict, where=None) -> None:
    """Load :func:`capture`'s state back into ``parts``, key by key; a state that does not
    fit (saved by another version of the code, or hand-edited) is one line naming
    ``where``."""
    for k, v in parts.items():
        load_into(v, state[k], where, k)


def load_into(part, state, where=None, name: str = "model") -> None:
    """``part.load_state_dict(state)``, or a :class:`RunFolderError` naming ``where`` and
    the first mismatch when the saved state does not fit the code's."""
    try:
        part.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
        # torch's first line only names the class ("Error(s) in loading state_dict for X:")
        first = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s)") else lines[0]
        raise RunFolderError(f"{where or 'the checkpoint'} holds a {name} this code cannot "
                             f"load ({first[:160]}); it was saved by another version or with "
                             f"other settings: start a new run with --out") from None
