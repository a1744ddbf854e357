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


def write_json(path, obj, indent: int = 1) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=indent) + "\n"))


def save(obj, path) -> Path:
    """``torch.save`` with an atomic rename."""
    return atomic_write(path, lambda p: torch.save(obj, p))
