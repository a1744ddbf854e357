"""Step time of the quick PC-DARTS search on 2 processes (torchrun) vs 1, same global batch.

Each side runs the real search (``pc_darts.search``, the ``quick`` preset: global batch 64,
an architecture step and a weight step per step) for two epochs of ``--steps`` steps, in a
process of its own; the second epoch's wall time divided by its steps is the step time
(the first epoch pays for warming up). The per-epoch evaluation of the architecture half is
left out (stubbed) so that only the steps are timed. On 2 processes each rank computes a
shard of 32 images and the gradients are averaged through gloo (CPU) or NCCL (GPUs).

    python benchmarks/bench_distributed.py                 # CPU, 1 thread per process
    python benchmarks/bench_distributed.py --device cuda   # one GPU vs two

On a CPU the ratio says whether the processes found free cores, not how fast the method
scales: on a 2-core machine shared with other work it is expected near 1 (or above).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=15, help="timed steps (the second epoch)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default=None,
                   help="default: fashion_mnist where installed, else digits")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def child(args) -> None:
    import torch

    from nas_tutorial import distributed, pc_darts
    from nas_tutorial.data import find_fashion_mnist, load

    torch.set_num_threads(1)
    device = distributed.init(args.device)
    dataset = args.dataset or ("fashion_mnist" if find_fashion_mnist() else "digits")
    cfg = pc_darts.get_config("pc-darts", "quick", dataset=dataset, epochs=2,
                              warmup_epochs=0, steps_per_epoch=args.steps)
    pc_darts.evaluate = lambda *a, **k: (0.0, 0.0)  # time the steps only
    result = pc_darts.search(cfg, device=device, progress=False)
    images = len(load(dataset, train=True, size=cfg.image_size, n=cfg.train_images))
    steps = min(args.steps, int(images * cfg.train_portion) // cfg.batch_size)  # digits: 11
    if distributed.is_main():
        Path(args.child).write_text(json.dumps({
            "processes": distributed.world_size(), "dataset": dataset, "steps": steps,
            "step_s": result.history.seconds[-1] / steps}))
    distributed.shutdown()


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    if args.child:
        child(args)
        return {}
    here = Path(__file__).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(here.parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    flags = ["--steps", str(args.steps), "--device", args.device]
    if args.dataset:
        flags += ["--dataset", args.dataset]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            record = Path(tmp) / f"{n}.json"
            launch = ([sys.executable, str(here)] if n == 1 else
                      [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       f"--nproc_per_node={n}", str(here)])
            subprocess.run(launch + flags + ["--child", str(record)], env=env, check=True)
            out[n] = json.loads(record.read_text())
    ratio = out[2]["step_s"] / out[1]["step_s"]
    print(f"quick PC-DARTS search step ({out[1]['dataset']}, global batch 64, {args.device}): "
          f"1 process {out[1]['step_s']:.3f} s, 2 processes {out[2]['step_s']:.3f} s; "
          f"ratio 2/1 = {ratio:.2f}")
    return {"one_s": out[1]["step_s"], "two_s": out[2]["step_s"], "ratio": ratio}


if __name__ == "__main__":
    main()
