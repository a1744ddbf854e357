"""Recorded run summaries under ``data/runs/``: where and when a run was made, and what it gave.

A GPU run (a ``full``-preset search, a benchmark table) is recorded as one small JSON file
so that a notebook on a machine without a GPU can show it beside its own quick run, labelled
with the device and the date. Nothing here is imported by the algorithms.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from .checkpoints import write_json
from .data import default_root


def runs_root(root=None) -> Path:
    return Path(root) if root is not None else default_root() / "runs"


def device_label(device="auto") -> str:
    """A human label such as ``NVIDIA H100 80GB HBM3`` or ``CPU x86_64, 2 threads``."""
    from .data import resolve_device

    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"


def record(kind: str, payload: dict, device="auto", root=None, name: str | None = None) -> Path:
    """Write ``payload`` as ``data/runs/<name>.json`` with device, date and versions."""
    folder = runs_root(root)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    dev = device_label(device)
    slug = "gpu" if "CPU" not in dev else "cpu"
    name = name or f"{kind}-{slug}-{stamp}"
    summary = {
        "kind": kind,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": dev,
        "torch": torch.__version__,
        "payload": payload,
    }
    return write_json(folder / f"{name}.json", summary)


def load_runs(kind: str | None = None, root=None) -> list:
    """Every recorded summary (optionally of one ``kind``), newest first."""
    folder = runs_root(root)
    runs = []
    for path in sorted(folder.glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a half-written or foreign file is not a run
        if kind is None or run.get("kind") == kind:
            run["file"] = path.name
            runs.append(run)
    return sorted(runs, key=lambda r: r.get("recorded_at", ""), reverse=True)


def label(run: dict) -> str:
    """``<kind> on <device>, <date>`` for legends and table captions."""
    return f"{run.get('kind', '?')} on {run.get('device', '?')}, {run.get('recorded_at', '?')[:10]}"
