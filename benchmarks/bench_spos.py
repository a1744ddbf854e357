"""SPOS speed: a supernet step on a sampled path vs the same path as a plain network, and
the cost of evaluating a path after BN recalibration.

Step: the same optimizer (SGD, momentum, decay on >1-dim weights), the same batch and the
same path; the supernet additionally samples nothing here, so the ratio is what weight
sharing itself costs (goal <= 1.3x: unsampled blocks must cost nothing). Paths alternate
over a fixed list so both networks see the same work. Evaluation: BN recalibration over
``recal_batches`` device-resident batches, then accuracy on the held-out images, one host
sync per path (:class:`nas_tutorial.methods.spos.PathEvaluator`). On CUDA: bf16 autocast and
channels_last, as in training.

    python benchmarks/bench_spos.py                       # CPU, quick supernet, 2 threads
    python benchmarks/bench_spos.py --config cifar --batch 256 --device cuda
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import replace


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="quick", choices=("quick", "cifar", "imagenet"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up)")
    p.add_argument("--paths", type=int, default=4, help="paths timed for evaluation")
    p.add_argument("--recal-batches", type=int, default=4)
    p.add_argument("--valid", type=int, default=512, help="held-out images per evaluation")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda; 'all' = cpu and cuda")
    return p


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_interleaved(steps: dict, paths, n, device) -> dict:
    """Median seconds per call of each ``steps[name](path)``, the calls interleaved so
    that a change in machine load hits every variant alike."""
    for i in range(3):
        for step in steps.values():
            step(paths[i % len(paths)])
    _sync(device)
    times = {name: [] for name in steps}
    for i in range(n):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(paths[i % len(paths)])
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(device, args) -> list:
    import torch

    from nas_tutorial import data, spos
    from nas_tutorial.training import autocast

    cuda = device.type == "cuda"
    torch.set_num_threads(args.threads)
    config = {"quick": spos.QUICK, "cifar": spos.CIFAR, "imagenet": spos.IMAGENET}[args.config]
    cfg = replace(spos.PRESETS["quick"], supernet=config, amp=True)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    shape = (args.batch, config.in_channels, config.image_size, config.image_size)
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, config.num_classes, (args.batch,), device=device)
    rng = random.Random(0)
    paths = [spos.random_path(config, rng) for _ in range(4)]
    torch.manual_seed(0)
    supernet = spos.Supernet(config).to(device, memory_format=fmt)
    opt = spos.make_optimizer(supernet, cfg)
    # The same paths as plain networks: one built per path, cycled like the supernet's.
    nets = {p: spos.standalone(supernet, p).to(memory_format=fmt).train() for p in paths}
    opts = {p: spos.make_optimizer(n, cfg) for p, n in nets.items()}
    t = _time_interleaved({
        "supernet": lambda p: spos.train_step(supernet, opt, x, y, p, cfg),
        "plain": lambda p: spos.train_step(nets[p], opts[p], x, y, None, cfg)},
        paths, args.steps, device)
    t_super, t_plain = t["supernet"], t["plain"]
    rows = [{"device": str(device), "what": f"train step, batch {args.batch}",
             "supernet_ms": 1e3 * t_super, "plain_ms": 1e3 * t_plain,
             "ratio": t_super / t_plain}]

    n_train = args.recal_batches * args.batch
    side, ch = config.image_size, config.in_channels
    train_ds = data.synthetic(n_train, (ch, side, side), config.num_classes, seed=0).to(device)
    valid_ds = data.synthetic(args.valid, (ch, side, side), config.num_classes, seed=1).to(device)
    ev = spos.PathEvaluator(supernet, train_ds, valid_ds, args.recal_batches, args.batch,
                            amp=cfg.amp)
    eval_paths = [spos.random_path(config, rng) for _ in range(args.paths + 1)]
    ev.accuracy(eval_paths[0])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for p in eval_paths[1:]:
        ev.accuracy(p)
    _sync(device)
    t_eval = (time.perf_counter() - t0) / args.paths
    with torch.no_grad(), autocast(device, cfg.amp):  # the forward passes alone, for scale
        t_fwd = _time_interleaved({"fwd": lambda p: supernet.eval()(x, p)}, paths,
                                  args.steps, device)["fwd"]
    images = args.recal_batches * args.batch + args.valid
    rows.append({"device": str(device),
                 "what": f"evaluate path: {args.recal_batches}x{args.batch} recal + "
                         f"{args.valid} valid", "supernet_ms": 1e3 * t_eval,
                 "plain_ms": 1e3 * t_fwd * images / args.batch, "ratio": t_eval / (
                     t_fwd * images / args.batch)})
    return rows


def main(argv=None) -> list:
    """Run the benchmark; print a table and return its rows (dicts)."""
    import torch

    args = _parser().parse_args(argv)
    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif args.device == "auto":
        devices = ["cuda" if torch.cuda.is_available() else "cpu"]
    else:
        devices = [args.device]
    rows = []
    for d in devices:
        rows += measure(torch.device(d), args)
    print(f"SPOS, {args.config} supernet, {args.threads} CPU threads")
    print(f"{'device':<7} {'what':<42} {'supernet ms':>12} {'plain ms':>10} {'ratio':>6}")
    for r in rows:
        print(f"{r['device']:<7} {r['what']:<42} {r['supernet_ms']:>12.1f} "
              f"{r['plain_ms']:>10.1f} {r['ratio']:>6.2f}")
    print("train step: supernet vs the same path as a plain network (goal <= 1.3x); "
          "evaluate: per path vs plain forward passes over the same images")
    return rows


if __name__ == "__main__":
    main()
