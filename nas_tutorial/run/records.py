"""Recorded run summaries under ``data/runs/``: where and when a run was made, and what it gave.

A GPU run (a ``full``-preset search, a benchmark table) is recorded as one small JSON file
so that a notebook on a machine without a GPU can show it beside its own quick run, labelled
with the device and the date. Also the trained SPOS supernets a notebook finds again in run
folders (:func:`load_supernet`). Nothing here is imported by the algorithms.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..methods import spos
from ..checkpoints import read_checkpoint, write_json
from ..data import default_root
from ..devices import device_label, machine  # noqa: F401  (runs.device_label, as before)


def runs_root(root=None) -> Path:
    return Path(root) if root is not None else default_root() / "runs"


def record(kind: str, payload: dict, device="auto", root=None, name: str | None = None) -> Path:
    """Write ``payload`` as ``data/runs/<name>.json`` with device, date, versions and the
    machine's fingerprint (:func:`nas_tutorial.devices.machine`: a recorded number is
    compared bit for bit only on the machine that made it)."""
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
        "machine": machine(device),
        "payload": payload,
    }
    return write_json(folder / f"{name}.json", summary, strict=True)


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


_SCOPE = {"network": "net", "ops": "ops"}


def search_step_table(run: dict) -> str:
    """The PC-DARTS/DARTS rows of a recorded ``benchmarks`` run as a text table: per K the
    step time and peak memory of this project's search step, of the official-style step on
    the same machine (``benchmarks/reference_pc_darts.py``), their ratio, and the NHWC/NCHW
    step-time ratio that decides the search's memory layout (``net``: the whole network in
    NHWC, at K=1; ``ops``: NHWC mixed ops in an NCHW network, at K>1), and where recorded
    the fused cells' step time over the unfused cells' (``fused/unf.``, which decides
    ``fast.pc_darts.CPU_FUSED``) and the operators of one step at batch 8 on one thread,
    fused and unfused (``ops fused``, ``ops unf.``)."""
    cells = any("cells" in row.get("raw", {}) for row in run["payload"]["rows"])
    lines = [label(run),
             f"{'method':<9}{'K':>3}{'ours s':>8}{'official s':>12}{'ours/official':>15}"
             f"{'peak MB':>9}{'official MB':>13}{'NHWC/NCHW':>11}"
             + (f"{'fused/unf.':>12}{'ops fused':>11}{'ops unf.':>10}" if cells else "")]
    for row in run["payload"]["rows"]:
        raw = row.get("raw", {})
        if "step_s" not in raw or "k" not in raw or "impl" in raw:
            continue
        off = raw.get("official_step_s")
        lay = raw.get("layout", {})
        lines.append(
            f"{row['method']:<9}{raw['k']:>3}{raw['step_s']:>8.2f}"
            + (f"{off:>12.2f}{raw['step_s'] / off:>15.2f}" if off else f"{'-':>12}{'-':>15}")
            + f"{raw['peak_mb']:>9.0f}"
            + (f"{raw['official_peak_mb']:>13.0f}" if raw.get("official_peak_mb") else f"{'-':>13}")
            + (f"{'-':>11}" if not lay else f"{'failed':>11}" if lay.get("nhwc_ratio") is None
               else f"{lay['nhwc_ratio']:>7.2f}" + f"{_SCOPE.get(lay.get('nhwc_scope'), ''):>4}")
            + (f"{raw['cells']['fused_ratio']:>12.2f}{raw.get('ops_b8_fused') or 0:>11,}"
               f"{raw.get('ops_b8_unfused') or 0:>10,}" if cells and "cells" in raw else ""))
    return "\n".join(lines)


# -- a trained SPOS supernet, found again ------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent.parent
RECORDED = REPO / "data" / "runs"  # the runs shipped with the repository


def run_folder(cfg) -> Path:
    """Where ``search spos`` writes a run of these settings by default (from the folder it
    runs in): ``runs/spos-quick-seed0``, ``runs/spos-quick-channels-seed0`` in the channel
    space."""
    space = "-channels" if getattr(cfg, "space", "blocks") == "channels" else ""
    return Path(f"runs/spos-{cfg.name}{space}-seed{cfg.seed}")


def notebook_folder(cfg) -> Path:
    """Where :func:`load_supernet` keeps a supernet a notebook trained: under
    ``$NAS_TUTORIAL_RUNS`` (one per user on a shared hub), else ``runs/`` of the repository,
    named by the run and a hash of its training settings (``notebook-spos-gpu-seed0-1a2b3c4d``:
    changed settings or another dataset never meet an old file). Found again by the next
    notebook, resumed after an interruption, and apart from the command line's run folders
    (a folder holding a run is refused to a new one)."""
    settings = json.dumps(spos.training_settings(asdict(cfg)), sort_keys=True, default=str)
    key = hashlib.sha1(settings.encode()).hexdigest()[:8]
    root = Path(os.environ.get("NAS_TUTORIAL_RUNS") or REPO / "runs")
    return root / f"notebook-{run_folder(cfg).name}-{key}"


def shown(path) -> str:
    """A path as a reader should see it: relative to the repository when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def supernet_file(cfg, folders=None) -> Path | None:
    """A finished ``supernet.pt`` that ``search spos`` wrote with exactly ``cfg``'s settings:
    first in the default run folder (``runs/spos-PRESET-seedS`` here or in the repository),
    then in the copy shipped under ``data/runs``, then one a notebook trained
    (:func:`notebook_folder`); None when none holds one."""
    name = run_folder(cfg)
    folders = folders or (name, REPO / name, RECORDED / name.name, notebook_folder(cfg))
    for folder in folders:
        f = Path(folder) / "supernet.pt"
        if f.is_file():
            try:
                state = read_checkpoint(f, "spos")
            except ValueError:  # unreadable or incomplete: not a cache
                continue
            if (spos.training_settings(state.get("config", {})) == spos.training_settings(asdict(cfg))
                    and state.get("epoch") == cfg.epochs):
                return f.resolve()
    return None


def load_supernet(cfg, train_ds, device="auto", folders=None, progress=True):
    """(supernet, history, source): the supernet ``search spos`` trained with ``cfg`` when
    :func:`supernet_file` finds one (``source`` is that file: the finished checkpoint is
    resumed, so nothing trains), else a new one trained now (``source`` is None), written
    as it trains to :func:`notebook_folder` unless ``folders`` were named. Train the
    supernet once, search it many times: the paper's workflow."""
    found = supernet_file(cfg, folders)
    keep = found
    if found is None and folders is None:  # kept for the next notebook, resumed if stopped
        keep = notebook_folder(cfg) / "supernet.pt"
        try:
            keep.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only checkout: train all the same, keep nothing
            print(f"cannot keep the supernet in {shown(keep.parent)} ({e.strerror}); set "
                  f"NAS_TUTORIAL_RUNS to a writable folder to keep it")
            keep = None
    torch.manual_seed(cfg.seed)
    supernet = spos.Supernet(cfg.supernet)
    history = spos.train_supernet(supernet, train_ds, cfg, device, checkpoint=keep,
                                  progress=progress and found is None)
    return supernet, history, found
