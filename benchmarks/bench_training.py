"""Memory layout for the quick networks: NCHW vs channels_last (NHWC), training and evaluation.

The three ground-truth tables train hundreds of small networks on the CPU, so the layout
was chosen by this measurement, not by habit: a PNAS child (2 cells, C=8), an SPOS path of
the quick supernet and a quick-preset evaluation network of a random DARTS cell, each on
1x16x16 images, one thread (how the tables run). Throughput in images per second for SGD
steps, and seconds to evaluate 10,000 images.

    python benchmarks/bench_training.py                  # CPU, 1 thread
    python benchmarks/bench_training.py --device cuda --batch 256
"""
from __future__ import annotations

import argparse
import random
import time


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up)")
    p.add_argument("--side", type=int, default=16, help="image side in pixels")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--device", default="cpu")
    return p


def _networks():
    from nas_tutorial import compare, pnas, spos
    from nas_tutorial.genotypes import Genotype
    from nas_tutorial.network import NetworkCIFAR

    ops = ("sep_conv_3x3", "max_pool_3x3")
    cell = pnas.expand_all(pnas.one_block_cells(ops), ops)[50]
    return {
        "PNAS child (2 cells, C=8)": lambda: NetworkCIFAR(Genotype.from_cell(cell), 8, 10, 2,
                                                          in_channels=1),
        "SPOS quick path": lambda: spos.Supernet(spos.QUICK, spos.random_path(
            spos.QUICK, random.Random(0))),
        "DARTS cell, quick preset": lambda: compare.cell_network(
            compare.random_genotype(0, 3, 3), "quick", 10, 1, 0),
    }


def measure(build, side, batch, steps, channels_last, device):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = build().to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 1, side, side, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(steps + 3):
        if i == 3:
            sync()
            t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    step_s = (time.perf_counter() - t0) / steps
    net.eval()
    xe = torch.randn(1000, 1, side, side, device=device).contiguous(memory_format=fmt)
    with torch.no_grad():
        net(xe)
        sync()
        t0 = time.perf_counter()
        for _ in range(3):
            net(xe)
        sync()
    eval_s = (time.perf_counter() - t0) / 3 * 10
    return batch / step_s, eval_s


def main(argv=None) -> list:
    import torch

    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    print(f"{'network':<28} {'layout':<14} {'train img/s':>12} {'eval 10k s':>11}")
    for name, build in _networks().items():
        for cl in (False, True):
            ips, ev = measure(build, args.side, args.batch, args.steps, cl, device)
            rows.append({"network": name, "channels_last": cl, "train_img_s": ips,
                         "eval_10k_s": ev})
            print(f"{name:<28} {'channels_last' if cl else 'NCHW':<14} {ips:>12.0f} {ev:>11.2f}")
    return rows


if __name__ == "__main__":
    main()
