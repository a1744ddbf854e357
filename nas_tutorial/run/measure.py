"""Time and memory of one PC-DARTS/DARTS search step, the measure behind "what partial
channels buy" (PC-DARTS Sec. 3.2, Table 1's memory and search cost).

:func:`search_step` times ``steps`` search steps (the architecture step, then the weight
step, as the search loop does) at one K in this process; :func:`search_steps` runs it for
several K, each in a fresh process so that the peak resident memory belongs to that K's
step alone (on CUDA: ``max_memory_allocated``). ``make bench``
(``benchmarks/bench_pc_darts.py``) and notebook 03 both use it; it lives in the run layer
because it runs the method's step.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.nn.functional as F

from ..devices import autocast, resolve_device
from ..fast.pc_darts import apply_layout, uses_fused_cells
from ..methods.pc_darts import Architect, SearchNetwork, get_config, weight_optimizer


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def _reset_peak_rss() -> int:
    """Current resident set in KB, after resetting the kernel's peak (Linux >= 4.0), so the
    peak that follows belongs to the search step, not to imports or model building."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS")
    except OSError:  # not Linux: the process peak so far is the baseline
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss() -> int:
    try:
        return _status_kb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def time_steps(step, steps: int, device) -> tuple:
    """Run ``step()`` once to warm up, then ``steps`` times: (wall seconds, CPU seconds of
    this process, each per step) and the peak memory in MB above what was held before."""
    cuda = torch.device(device).type == "cuda"
    base_kb = _reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    step()  # warm-up: allocator, kernels (and compilation)
    times, cpu_times = [], []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if cuda:
        return times, cpu_times, (torch.cuda.max_memory_allocated() - base) / 2**20
    return times, cpu_times, (_peak_rss() - base_kb) / 1024


def count_ops(step) -> int:
    """The aten operators one call of ``step()`` dispatches, nested calls counted (PyTorch's
    profiler): on a small supernet the step's cost is mostly per operator, so this is the
    number the fused cells bring down."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints start/stop lines to file descriptor 2, where a
    notebook shows them as noise: send that descriptor to /dev/null meanwhile (an exception
    still reaches Python, and is printed after)."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to quiet
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def search_step(k: int, C: int = 16, layers: int = 8, batch: int = 32, image_size: int = 32,
                steps: int = 5, threads: int = 1, device="auto", compile: bool = False,
                unrolled: bool = False, count: bool = True, fused: bool | None = None) -> dict:
    """Median time (wall and CPU seconds) and peak memory (MB above the model's) of
    ``steps`` search steps at partial-channel ``k`` (``k=1``: DARTS, no edge normalization)
    on random CIFAR-shaped batches, after one warm-up step; with ``count``, the operators
    one more step dispatches (:func:`count_ops`). ``fused``: the fused cells (True), the
    unfused fast ones (False), or what the search picks for this K and device (None)."""
    device = resolve_device(device)
    cuda = device.type == "cuda"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = get_config("pc-darts" if k > 1 else "darts", "full", k=k, edge_norm=k > 1,
                     compile=compile, unrolled=unrolled)
    fused = uses_fused_cells(cfg, device) if fused is None else fused
    model = SearchNetwork(C, 10, layers, k=k, edge_norm=k > 1, fast=True, fused=fused).to(device)
    fmt = torch.channels_last if apply_layout(model, cfg, device) else torch.contiguous_format
    forward = torch.compile(model) if compile and cuda else model
    opt = weight_optimizer(model, cfg)  # the search's own: momentum 0.9, weight decay 3e-4
    shape = (batch, 3, image_size, image_size)
    x, xv = (torch.randn(shape, device=device).contiguous(memory_format=fmt) for _ in range(2))
    y, yv = (torch.randint(0, 10, (batch,), device=device) for _ in range(2))
    step = step_function(model, cfg, device, opt, x, y, xv, yv, forward=forward)
    times, cpu_times, peak_mb = time_steps(step, steps, device)
    ops = count_ops(step) if count else None  # after the timing: the profiler costs time
    return {"k": k, "edge_norm": k > 1, "batch": batch, "device": str(device), "ops": ops,
            "fused": fused,
            "threads": threads, "step_s": statistics.median(times),
            # CPU seconds of this process: on a shared machine, with 1 thread, the wall time
            # the step would take on an idle core
            "cpu_s": statistics.median(cpu_times), "peak_mb": peak_mb,
            "params": sum(p.numel() for p in model.weight_parameters())}


def step_function(model, cfg, device, opt, x, y, xv, yv, forward=None):
    """One search step of ``model`` as the search loop takes it (the architecture step on
    ``xv``, then the weight step on ``x``), on fixed batches, as a function of nothing."""
    forward = model if forward is None else forward
    arch, weights = Architect(model, cfg, device, forward=forward), model.weight_parameters()

    def step():
        arch.step(x, y, xv, yv, cfg.lr, opt)
        with autocast(device, cfg.amp):
            loss = F.cross_entropy(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=weights)
        torch.nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
        opt.step()
    return step


def search_steps(ks=(1, 2, 4, 8), **sizes) -> list:
    """:func:`search_step` for each K, each in a fresh process (one thread unless
    ``threads`` says otherwise), printing a line per K as it lands."""
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for k in ks:
        env = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(sizes.get("threads", 1))  # the child's OpenMP
        try:
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                row = pool.submit(search_step, k, **sizes).result()
        finally:
            if env is None:
                os.environ.pop("OMP_NUM_THREADS")
            else:
                os.environ["OMP_NUM_THREADS"] = env
        print(f"  K={k}: {row['step_s']:.2f} s/step, {row['peak_mb']:.0f} MB", flush=True)
        rows.append(row)
    return rows
