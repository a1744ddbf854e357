"""PNAS children per second: one at a time vs several concurrently on one device.

The same children (one-block cells of the preset's op subset) are trained with
``ChildTrainer(workers=1)`` and with ``workers=W`` (threads; one CUDA stream per worker on
a GPU, one intra-op thread per child on a CPU); the data is loaded once per trainer and
shared by all its children. Accuracies must match: concurrency must not change results.

    python benchmarks/bench_pnas.py --preset quick --children 8 --workers 2
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch


def _time(trainer, cells, device) -> tuple:
    trainer(cells[:1])  # warm-up: kernels, allocator, cuDNN autotuning
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    accs = trainer(cells)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, accs


def main(argv=None) -> list:
    from nas_tutorial import pnas
    from nas_tutorial.data import resolve_device

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None, help="quick (digits, CPU) or full (CIFAR-10)")
    p.add_argument("--children", type=int, default=8, help="children trained per setting")
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="concurrent children")
    p.add_argument("--epochs", type=int, default=None, help="epochs per child (preset default)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    config = pnas.get_config(args.preset)
    if args.epochs:
        config = replace(config, train=replace(config.train, epochs=args.epochs))
    device = resolve_device(args.device)
    cells = pnas.one_block_cells(config.ops)[:args.children]
    rows, base = [], None
    for workers in [1] + [w for w in args.workers if w != 1]:
        trainer = pnas.ChildTrainer(config, device, workers=workers)
        seconds, accs = _time(trainer, cells, device)
        base = base or (seconds, accs)
        rows.append({"workers": workers, "children": len(cells), "seconds": round(seconds, 2),
                     "children_per_s": round(len(cells) / seconds, 3),
                     "speedup": round(base[0] / seconds, 2),
                     "same_accuracies": accs == base[1], "device": str(device),
                     "threads_per_child": 1 if device.type == "cpu" else None})
    print(f"{'workers':>7} {'children':>8} {'seconds':>8} {'child/s':>8} {'speedup':>7} "
          f"{'same acc':>8}  device")
    for r in rows:
        print(f"{r['workers']:>7} {r['children']:>8} {r['seconds']:>8.2f} "
              f"{r['children_per_s']:>8.3f} {r['speedup']:>7.2f} {str(r['same_accuracies']):>8}"
              f"  {r['device']}" + (" (1 thread per child)" if r["threads_per_child"] else ""))
    return rows


if __name__ == "__main__":
    main()
