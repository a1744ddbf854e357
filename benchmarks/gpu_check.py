"""`make gpu-check`: the CUDA path checked and measured in one run on a lent GPU.

A session that is lent a GPU has minutes of it, a machine without internet, its own torch
and no plotly or graphviz: this script runs from source (``PYTHONPATH=.``), in at most
about 8 minutes on one GPU, and writes one record under ``data/runs/``
(``gpu-check-gpu-DATE.json``: device, torch, the machine's fingerprint, every figure):

1. the ``cuda`` tests (``tests/test_cuda.py``): each search's step with bf16 autocast and
   NHWC, the unrolled step in real fp32, evaluate/train device handling, a PNAS child and a
   SPOS path;
2. the search step at the papers' sizes (PC-DARTS K=4 and DARTS, batch 256, C=16, 8 cells,
   32 px): ours (``bench_pc_darts.measure``, the fused cells on CUDA) against the
   official-style step (``reference_pc_darts.py``, fp32), the fused cells against the
   unfused ones (``bench_pc_darts.measure_cells``), and DARTS's second-order step at batch 64;
3. the second-order architecture gradient against float64 (C=16, 8 cells, 32 px, batch 64)
   as the search takes it (TF32 off inside the step; fails under cosine 0.999) and with
   TF32 allowed for convolutions and matmuls (cuDNN's default is on since Ampere);
4. each CLI verb on the device with small budgets;
5. the notebooks' ``gpu`` preset: every unit of its work timed on the GPU
   (``nas_tutorial.run.gpu_budget.measure_units``), recorded as ``gpu-budget-gpu.json``
   (``source: measured``), which then replaces the estimate the preset was sized with.

``--dry`` (``make gpu-check DRY=1``) runs the same script on the CPU with tiny sizes in
about a minute and writes the record to a temporary folder (a unit test runs it, so the
script cannot rot between GPU sessions). Exit status 1 when any part failed.

    PYTHONPATH=. python benchmarks/gpu_check.py           # on the GPU machine
    python benchmarks/gpu_check.py --dry                  # anywhere
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# The papers' sizes on the GPU; the dry run's on the CPU (shapes only, no meaning).
FULL = dict(batch=256, C=16, layers=8, image_size=32, steps=5, second_order_batch=64)
DRY = dict(batch=4, C=4, layers=3, image_size=8, steps=1, second_order_batch=4)


def cuda_tests(device: str) -> dict:
    env = dict(os.environ, NAS_TUTORIAL_TEST_DEVICE=device,
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-m", "cuda", str(REPO / "tests" / "test_cuda.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"ok": proc.returncode == 0, "summary": lines[-1] if lines else proc.stderr[-300:],
            "failures": [line for line in lines if line.startswith("FAILED")]}


def search_steps(device: str, size: dict) -> dict:
    import bench_pc_darts as bench

    args = SimpleNamespace(batch=size["batch"], C=size["C"], layers=size["layers"],
                           image_size=size["image_size"], steps=size["steps"], threads=2,
                           device=device, compile=False, unrolled=False)
    rows = {}
    for name, k in (("pc_darts_k4", 4), ("darts_k1", 1)):
        ours = bench.measure(k, args)
        official = bench.measure_reference(k, args)
        rows[name] = {"ours_s": ours["step_s"], "official_s": official["step_s"],
                      "ratio": ours["step_s"] / official["step_s"],
                      "ours_peak_mb": ours["peak_mb"], "official_peak_mb": official["peak_mb"]}
    for name, k in (("cells_k4", 4), ("cells_k1", 1)):  # fused vs unfused cells, A/B
        rows[name] = bench.measure_cells(k, args)
    second = dict(vars(args), batch=size["second_order_batch"], unrolled=True)
    rows["darts_second_order"] = {"batch": second["batch"],
                                  "ours_s": bench.measure(1, SimpleNamespace(**second))["step_s"]}
    # the paper's search: 50 epochs x 98 steps of 256 (25,000 images for the weights), the
    # first 15 epochs weight-only; a weight-only step estimated as half a search step
    k4 = rows["pc_darts_k4"]["ours_s"]
    rows["pc_darts_full_search_min_estimate"] = (35 * 98 * k4 + 15 * 98 * k4 / 2) / 60
    return rows


def second_order_cosine(device: str, size: dict) -> dict:
    import torch

    from nas_tutorial import pc_darts as pc

    torch.manual_seed(0)
    C, layers, px, b = size["C"], size["layers"], size["image_size"], size["second_order_batch"]
    cfg = pc.get_config("darts", "full", unrolled=True)
    net = pc.SearchNetwork(C, 10, layers, k=1, edge_norm=False, fast=True,
                           fused=True).to(device)  # the cells a CUDA search runs
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 1e-3)
    net64 = copy.deepcopy(net).double()
    xt, xv = (torch.randn(b, 3, px, px, device=device) for _ in range(2))
    yt, yv = (torch.randint(0, 10, (b,), device=device) for _ in range(2))
    g64, _ = pc.Architect(net64, cfg, device).unrolled_grads(xt.double(), yt, xv.double(), yv,
                                                             cfg.lr)

    def cosine(g):
        a, c = (torch.cat([t.flatten().double() for t in x]) for x in (g, g64))
        return float(a @ c / a.norm() / c.norm())

    g, _ = pc.Architect(net, cfg, device).unrolled_grads(xt, yt, xv, yv, cfg.lr)
    out = {"cosine_fp32": cosine(g)}

    @contextlib.contextmanager
    def autocast_off_only():  # what the step did before TF32 was turned off inside it
        with torch.autocast(torch.device(device).type, enabled=False):
            yield

    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    real = pc.full_fp32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    pc.full_fp32 = autocast_off_only
    try:
        g, _ = pc.Architect(net, cfg, device).unrolled_grads(xt, yt, xv, yv, cfg.lr)
        out["cosine_tf32_allowed"] = cosine(g)
    finally:
        pc.full_fp32 = real
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    return out


def cli_verbs(device: str, dry: bool, folder: Path) -> dict:
    """Each verb with a small budget; the dry run keeps to those that take seconds on a CPU
    (the quick searches' own epochs take minutes there)."""
    verbs = {
        "info": ["info", "DARTS_V2"],
        "table": ["table", "pnas", "--seeds", "1", "--limit", "1", "--device", device,
                  "--out", str(folder / "table.json")],
        "search pnas (table oracle)": ["search", "pnas", "--preset", "quick", "--oracle",
                                       "table", "--blocks", "2", "--beam", "2", "--device",
                                       device, "--out", str(folder / "pnas")],
    }
    if not dry:
        verbs.update({
            "train": ["train", "DARTS_V2", "--preset", "quick", "--epochs", "1", "--device",
                      device, "--out", str(folder / "train")],
            "search pc-darts --retrain": ["search", "pc-darts", "--preset", "quick",
                                          "--retrain", "--device", device,
                                          "--out", str(folder / "pc")],
            "search darts --unrolled": ["search", "darts", "--preset", "quick", "--epochs",
                                        "1", "--unrolled", "--device", device,
                                        "--out", str(folder / "darts")],
            "search spos": ["search", "spos", "--preset", "quick", "--population", "8",
                            "--generations", "2", "--device", device,
                            "--out", str(folder / "spos")],
            "search pnas (trained children)": ["search", "pnas", "--preset", "quick",
                                               "--blocks", "1", "--device", device,
                                               "--out", str(folder / "pnas-train")],
            "search pc-darts full, 1 epoch": ["search", "pc-darts", "--preset", "full",
                                              "--dataset", "synthetic", "--epochs", "1",
                                              "--device", device,
                                              "--out", str(folder / "pc-full")],
        })
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = {}
    for name, argv in verbs.items():
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "nas_tutorial.run.cli", *argv], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300)
        text = (proc.stdout if proc.returncode == 0 else proc.stderr).strip().splitlines()
        out[name] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                     "last": text[-1] if text else ""}
    return out


def notebook_budget(device: str, dry: bool, folder: Path) -> dict:
    """Part 5: the gpu preset's units timed here; each notebook's total against 300 s. The
    dry run times the tiny presets of the notebook test on the CPU, recorded nowhere."""
    from nas_tutorial.run import gpu_budget as gb
    from nas_tutorial.run import records

    if dry:
        sys.path.insert(0, str(REPO / "tests"))
        from gpu_preset_tiny import shrink

        shrink()
    units = gb.measure_units("gpu", device, progress=lambda line: print(f"  {line}", flush=True))
    payload = gb.make_record(units, "measured")
    path = records.record("gpu-budget", payload, device, root=folder if dry else None,
                          name="gpu-budget-gpu")
    return {"ok": dry or all(r["total_s"] <= gb.GOAL_S for r in payload["notebooks"].values()),
            "record": path.name,
            "totals_s": {nb: round(r["total_s"]) for nb, r in payload["notebooks"].items()},
            "units_ms": {k: round(v["seconds"] * 1e3, 2) for k, v in units.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (about a minute)")
    p.add_argument("--out", default=None,
                   help="folder of the record (default data/runs/; a temporary one with --dry)")
    args = p.parse_args(argv)
    import torch

    from nas_tutorial.run import records as runs

    if not args.dry and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here; run it on a lent GPU, or `make gpu-check DRY=1`")
        return 2
    device = "cpu" if args.dry else "cuda"
    size = DRY if args.dry else FULL
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    record = {"dry": args.dry, "sizes": size}
    parts = [("cuda_tests", lambda: cuda_tests(device)),
             ("search_step", lambda: search_steps(device, size)),
             ("second_order", lambda: second_order_cosine(device, size)),
             ("cli", lambda: cli_verbs(device, args.dry, work)),
             ("notebook_budget", lambda: notebook_budget(device, args.dry, work))]
    failed = []
    for name, part in parts:
        t0 = time.perf_counter()
        print(f"gpu-check: {name} ...", flush=True)
        try:
            record[name] = part()
        except Exception as e:  # noqa: BLE001  (one part's failure must not lose the rest)
            record[name] = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
        record[name + "_s"] = round(time.perf_counter() - t0, 1)
        result = record[name]
        bad = ("error" in result or result.get("ok") is False
               or result.get("cosine_fp32", 1.0) < 0.999
               or any(isinstance(v, dict) and v.get("rc", 0) != 0 for v in result.values()))
        if bad:
            failed.append(name)
        print(f"  {json.dumps(result)[:600]}", flush=True)
    folder = Path(args.out) if args.out else (work if args.dry else None)
    path = runs.record("gpu-check", record, device, root=folder,
                       name=None if not args.dry else "gpu-check-dry")
    print(f"record: {path}")
    if failed:
        print(f"gpu-check: failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
