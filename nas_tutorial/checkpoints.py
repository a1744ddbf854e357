"""Files that survive an interrupt: write a temporary file, then rename it over the old one.

``os.replace`` is atomic on one filesystem, so a Ctrl-C in a notebook or a killed CLI run
leaves either the previous checkpoint or the new one, never half of one; every search
resumes from what these functions wrote.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch


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
