"""The ``gpu`` notebook preset's time budget, recorded (``nas_tutorial.run.gpu_budget``).

Without a GPU (the default) it counts the operators of one unit of each kind of work on
the CPU (one thread, batch 16; about 2 minutes) and records the estimate
``data/runs/gpu-budget.json`` (``source: estimate``); on a GPU (``--device cuda``, which
``make gpu-check`` runs) it times each unit at the preset's batch sizes and records
``gpu-budget-gpu.json`` (``source: measured``), which the budget then prefers.

    python benchmarks/gpu_budget.py                 # estimate, on any machine
    PYTHONPATH=. python benchmarks/gpu_budget.py --device cuda
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu: estimate from operator counts; "
                   "cuda: time each unit")
    p.add_argument("--out", default=None, help="folder of the record (default data/runs/)")
    args = p.parse_args(argv)
    from nas_tutorial.run import gpu_budget as gb
    from nas_tutorial.run import records

    if args.device == "cpu":
        units = gb.estimate_units("gpu")
        check = gb.spos_cross_check()
        print(f"cross-check: SPOS CIFAR supernet step, {check['ops']:,} operators: estimated "
              f"{check['estimate_s'] * 1e3:.0f} ms, the H200 took {check['h200_s'] * 1e3:.1f} ms")
        payload, name = gb.make_record(units, "estimate", cross_check=check), "gpu-budget"
    else:
        units = gb.measure_units("gpu", args.device)
        payload, name = gb.make_record(units, "measured"), "gpu-budget-gpu"
    path = records.record("gpu-budget", payload, args.device, root=args.out, name=name)
    print(gb.describe(records.load_runs("gpu-budget", path.parent)[0]
                      if args.out else gb.latest()))
    print(f"record: {path}")
    over = [nb for nb, row in payload["notebooks"].items() if row["total_s"] > gb.GOAL_S]
    if over:
        print(f"over {gb.GOAL_S:.0f} s: {', '.join(over)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
