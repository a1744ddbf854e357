"""Step time and peak memory of one search step: DARTS (K=1) vs PC-DARTS K=2/4/8.

One step = a first-order architecture step on a validation batch + a weight step on a
training batch (the official loop), on random CIFAR-shaped data at the same batch for every
K. On CPU each configuration runs in its own process and its peak memory is the process's
peak resident set (``VmHWM``, reset just before the steps) minus the resident set after
building the network and the batch, so tensors (which tracemalloc cannot see) are counted.
On CUDA: bf16 autocast, ``torch.cuda.max_memory_allocated``. The memory layout is the
search's own (``fast.pc_darts.apply_layout``: NHWC on CUDA; on a CPU what the layout rows
below measured). Ours (the search's fast supernet, ``SearchNetwork(..., fast=True)``) and
the official-style step (``reference_pc_darts.py``: the plain supernet) run in alternating
processes, ``--rounds`` of each, and each side's median is reported (A/B, so a change in
machine load hits both alike).

    python benchmarks/bench_pc_darts.py                   # CPU, batch 32, 2 threads
    python benchmarks/bench_pc_darts.py --device cuda --batch 256
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from nas_tutorial.run.measure import count_ops, step_function, time_steps  # the library's probes


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="1,2,4,8", help="K values; K=1 runs without edge norm")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    p.add_argument("--rounds", type=int, default=3,
                   help="CPU: alternating processes of ours and the official-style step")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the official-style implementation (reference_pc_darts.py)")
    p.add_argument("--no-layouts", action="store_true",
                   help="skip the NCHW vs NHWC step-time comparison per K")
    p.add_argument("--layout-timeout", type=int, default=300,
                   help="seconds before a layout comparison counts as failed (NHWC can be "
                        "pathologically slow with narrow channel slices)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-layouts", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-cells", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-cells", action="store_true",
                   help="skip the fused vs unfused cells comparison per K")
    return p


def measure(k: int, args) -> dict:
    """Time and memory of ``args.steps`` search steps at one K, in this process (the
    library's :func:`nas_tutorial.run.measure.search_step`, which notebook 03 uses too)."""
    from nas_tutorial.run.measure import search_step

    row = search_step(k, C=args.C, layers=args.layers, batch=args.batch,
                      image_size=args.image_size, steps=args.steps, threads=args.threads,
                      device=args.device, compile=args.compile,
                      unrolled=getattr(args, "unrolled", False))
    if row["device"] == "cpu":  # the operator count at the size issue 26 states its goal in
        for fused in (True, False):
            count = search_step(k, C=args.C, layers=args.layers, batch=8,
                                image_size=args.image_size, steps=1, threads=1, device="cpu",
                                fused=fused)
            row["ops_b8_fused" if fused else "ops_b8_unfused"] = count["ops"]
    return row


def measure_cells(k: int, args) -> dict:
    """Step time of the same search step with the fused cells (``fast/fused.py``) and with
    the unfused fast cells, equal weights, the two timed in alternation (A/B, the first of
    each pair alternating); decides :data:`nas_tutorial.fast.pc_darts.CPU_FUSED`. Each
    model in the layout the search gives it."""
    import copy

    import torch

    from nas_tutorial.data import resolve_device
    from nas_tutorial.fast.pc_darts import apply_layout
    from nas_tutorial.methods.pc_darts import SearchNetwork, get_config, weight_optimizer

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_config("pc-darts" if k > 1 else "darts", "full", k=k, edge_norm=k > 1)
    shape = (args.batch, 3, args.image_size, args.image_size)
    x0, xv0 = torch.randn(shape, device=device), torch.randn(shape, device=device)
    y, yv = (torch.randint(0, 10, (args.batch,), device=device) for _ in range(2))
    base = SearchNetwork(args.C, 10, args.layers, k=k, edge_norm=k > 1, fast=True)
    steps = {}
    for name, fused in (("unfused", False), ("fused", True)):
        model = SearchNetwork(args.C, 10, args.layers, k=k, edge_norm=k > 1, fast=True,
                              fused=fused)
        model.load_state_dict(copy.deepcopy(base.state_dict()))
        model.to(device)
        fmt = (torch.channels_last if apply_layout(model, cfg, device)
               else torch.contiguous_format)
        x, xv = x0.contiguous(memory_format=fmt), xv0.contiguous(memory_format=fmt)
        steps[name] = step_function(model, cfg, device, weight_optimizer(model, cfg), x, y, xv, yv)
    times = _alternate(steps, args.steps, device)
    fused, unfused = statistics.median(times["fused"]), statistics.median(times["unfused"])
    return {"k": k, "device": str(device), "threads": args.threads, "batch": args.batch,
            "fused_s": fused, "unfused_s": unfused, "fused_ratio": fused / unfused,
            "faster": "fused" if fused < unfused else "unfused"}


def _alternate(steps: dict, n: int, device) -> dict:
    """Times of ``n`` calls of each step, one warm-up each, in alternation (the first of
    each round alternating), so that a change in machine load hits all alike."""
    import torch

    times = {name: [] for name in steps}
    for name in steps:  # warm-up
        steps[name]()
    for i in range(n):
        for name in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            steps[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return times


def measure_layouts(k: int, args) -> dict:
    """Step time of the same search step in NCHW and in NHWC (channels_last), one model per
    layout with equal weights, the two timed in alternation (A/B, the first of each pair
    alternating) so that a change in machine load hits both alike. At K=1 the whole network
    and its batches change layout (decides :data:`nas_tutorial.fast.pc_darts.CPU_CHANNELS_LAST`);
    at K>1 the network stays NCHW and only the mixed ops change (``fast.pc_darts.ops_to``;
    decides :data:`nas_tutorial.fast.pc_darts.CPU_OPS_CHANNELS_LAST`): whole-network NHWC
    with partial channels was measured slower or unusable there (see fast/pc_darts.py)."""
    import copy

    import torch

    from nas_tutorial.data import resolve_device
    from nas_tutorial.fast.pc_darts import ops_to
    from nas_tutorial.methods.pc_darts import SearchNetwork, get_config

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_config("pc-darts" if k > 1 else "darts", "full", k=k, edge_norm=k > 1)
    base = SearchNetwork(args.C, 10, args.layers, k=k, edge_norm=k > 1, fast=True).to(device)
    shape = (args.batch, 3, args.image_size, args.image_size)
    x0, xv0 = torch.randn(shape, device=device), torch.randn(shape, device=device)
    y, yv = (torch.randint(0, 10, (args.batch,), device=device) for _ in range(2))
    steps = {}
    scope = "network" if k == 1 else "ops"
    for name, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        model = copy.deepcopy(base)
        if scope == "ops":
            ops_to(model, fmt if fmt == torch.channels_last else None)
            fmt = torch.contiguous_format  # the network and its batches stay NCHW
        else:
            model.to(memory_format=fmt)
        opt = torch.optim.SGD(model.weight_parameters(), lr=cfg.lr, momentum=0.9,
                              weight_decay=3e-4)
        x, xv = x0.contiguous(memory_format=fmt), xv0.contiguous(memory_format=fmt)
        steps[name] = step_function(model, cfg, device, opt, x, y, xv, yv)
    times = _alternate(steps, args.steps, device)
    nchw, nhwc = statistics.median(times["nchw"]), statistics.median(times["nhwc"])
    return {"k": k, "device": str(device), "threads": args.threads, "batch": args.batch,
            "nchw_s": nchw, "nhwc_s": nhwc, "nhwc_ratio": nhwc / nchw, "nhwc_scope": scope,
            "faster": "channels_last" if nhwc < nchw else "contiguous"}


def measure_reference(k: int, args) -> dict:
    """The same step done the official way (``reference_pc_darts.py``): the plain supernet
    (one ReLU per op, the ``none`` op computed, a shuffle per edge) and an architecture step
    whose ``loss.backward()`` also computes every weight gradient, in fp32 as the official
    code runs. Same machine, same batch (``args.device``: the CPU unless it names CUDA)."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reference_pc_darts import OfficialStep, official_network

    from nas_tutorial.devices import resolve_device

    device = resolve_device(getattr(args, "device", "cpu"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = official_network(args.C, 10, args.layers, k).to(device)
    official_step = OfficialStep(ref)
    shape = (args.batch, 3, args.image_size, args.image_size)
    x, xv = torch.randn(shape, device=device), torch.randn(shape, device=device)
    y, yv = (torch.randint(0, 10, (args.batch,), device=device) for _ in range(2))

    def step():
        official_step(x, y, xv, yv)

    times, cpu_times, peak_mb = time_steps(step, args.steps, device)
    return {"k": k, "impl": "official-style", "batch": args.batch, "device": str(device),
            "ops": count_ops(step),
            "threads": args.threads, "step_s": statistics.median(times),
            "cpu_s": statistics.median(cpu_times),
            "peak_mb": peak_mb,
            "params": sum(p.numel() for p in ref.weight_parameters())}


def main(argv=None) -> list:
    args = _parser().parse_args(argv)
    if args.child is not None:
        fn = (measure_layouts if args.child_layouts else measure_cells if args.child_cells
              else measure_reference if args.child_reference else measure)
        print(json.dumps(fn(args.child, args)))
        return []
    import torch

    ks = [int(k) for k in args.ks.split(",")]
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    def child(k, reference=False, layouts=False, cells=False):
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        argv_child = [sys.executable, os.path.abspath(__file__), "--child", str(k),
                      "--batch", str(args.batch), "--image-size", str(args.image_size),
                      "--C", str(args.C), "--layers", str(args.layers),
                      "--steps", str(args.steps), "--threads", str(args.threads),
                      "--device", "cpu"] + (["--child-reference"] if reference else [])
        argv_child += (["--child-layouts"] if layouts else []) + (["--child-cells"] if cells else [])
        out = subprocess.run(argv_child, env=env, capture_output=True, text=True, check=True,
                             timeout=args.layout_timeout if layouts else None)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows, official = [], {}
    for k in ks:
        if cuda:
            rows.append(measure(k, args))
            continue
        # one process per K and side on CPU, so each peak resident set belongs to one step;
        # ours and the official-style step alternate, round after round
        ours, theirs = [], []
        for _ in range(1 if args.no_reference else args.rounds):
            ours.append(child(k))
            if not args.no_reference:
                theirs.append(child(k, reference=True))
        rows.append(dict(ours[0], step_s=statistics.median(r["step_s"] for r in ours),
                         cpu_s=statistics.median(r["cpu_s"] for r in ours),
                         peak_mb=max(r["peak_mb"] for r in ours),
                         step_s_rounds=[r["step_s"] for r in ours]))
        print(f"  K={k}: {rows[-1]['step_s']:.2f} s/step, {rows[-1]['peak_mb']:.0f} MB",
              flush=True)
        if theirs:
            official[k] = theirs
            rows[-1]["official_step_s"] = statistics.median(r["step_s"] for r in theirs)
            rows[-1]["official_peak_mb"] = max(r["peak_mb"] for r in theirs)
            rows[-1]["official_step_s_rounds"] = [r["step_s"] for r in theirs]
            rows[-1]["official_ops"] = theirs[0].get("ops")
            print(f"  K={k} official-style: {rows[-1]['official_step_s']:.2f} s/step, "
                  f"{rows[-1]['official_peak_mb']:.0f} MB", flush=True)
    layouts = []
    if not args.no_layouts:
        for k in ks:
            try:
                layouts.append(measure_layouts(k, args) if cuda else child(k, layouts=True))
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                # a crash or a step far slower than NCHW is a result too
                err = e.stderr if isinstance(e.stderr, str) else (e.stderr or b"").decode()
                why = ([f"timeout after {args.layout_timeout} s"]
                       if isinstance(e, subprocess.TimeoutExpired)
                       else err.strip().splitlines()[-1:] or [f"exit {e.returncode}"])
                layouts.append({"k": k, "nchw_s": None, "nhwc_s": None, "nhwc_ratio": None,
                                "nhwc_scope": "network" if k == 1 else "ops",
                                "faster": "contiguous", "nhwc_error": why[0][:200]})
                print(f"  K={k} layout: NHWC failed ({why[0][:80]}) -> contiguous", flush=True)
                continue
            r = layouts[-1]
            print(f"  K={k} layout ({r['nhwc_scope']}): NCHW {r['nchw_s']:.2f} s, "
                  f"NHWC {r['nhwc_s']:.2f} s -> {r['faster']}", flush=True)
        for row, lay in zip(rows, layouts):
            row["layout"] = lay
    if not args.no_cells:
        for row in rows:
            k = row["k"]
            row["cells"] = cells = measure_cells(k, args) if cuda else child(k, cells=True)
            print(f"  K={k} cells: fused {cells['fused_s']:.2f} s, unfused "
                  f"{cells['unfused_s']:.2f} s -> {cells['faster']}", flush=True)
    ref = next((r for r in rows if r["k"] == 1), rows[0])
    print(f"\none search step (arch + weights), batch {args.batch}, "
          f"{args.image_size}x{args.image_size}x3, C={args.C}, {args.layers} cells, "
          f"{rows[0]['device']}" + (f", {args.threads} threads" if not cuda else ", bf16"))
    print(f"{'method':<10}{'K':>3}{'params':>10}{'step s':>9}{'cpu s':>8}{'x DARTS':>9}"
          f"{'peak MB':>10}{'x DARTS':>9}{'ops':>9}{'ops b8':>9}{'unfused':>9}" + (
              f"{'official s':>12}{'speed-up':>10}{'off. ops':>10}" if official else ""))
    for r in rows:
        r["time_ratio"] = r["step_s"] / ref["step_s"]
        r["memory_ratio"] = r["peak_mb"] / ref["peak_mb"]
        name = "DARTS" if r["k"] == 1 else "PC-DARTS"
        print(f"{name:<10}{r['k']:>3}{r['params']:>10,}{r['step_s']:>9.2f}{r['cpu_s']:>8.2f}"
              f"{r['time_ratio']:>9.2f}{r['peak_mb']:>10.0f}{r['memory_ratio']:>9.2f}"
              f"{r.get('ops') or 0:>9,}{r.get('ops_b8_fused') or 0:>9,}"
              f"{r.get('ops_b8_unfused') or 0:>9,}"
              + (f"{r['official_step_s']:>12.2f}{r['official_step_s'] / r['step_s']:>10.2f}"
                 f"{r.get('official_ops') or 0:>10,}" if "official_step_s" in r else ""))
    if official:
        print("official s: the same step written like the official code "
              "(benchmarks/reference_pc_darts.py) on this machine; speed-up = official / ours")
    print("ops: aten operators one step dispatches, nested calls counted (torch.profiler); "
          "ops b8 / unfused: the same at batch 8 on one thread, fused and unfused cells")
    return rows


if __name__ == "__main__":
    main()
