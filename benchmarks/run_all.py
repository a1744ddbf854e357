"""Every method's benchmark in one command, one table, one JSON record under data/runs/.

    python benchmarks/run_all.py            # CPU here; on a GPU machine the CUDA variants
    python benchmarks/run_all.py --quick    # fewer steps, for a smoke run

Rows: PC-DARTS search step (time, peak memory) for K=1 (DARTS, the baseline) and K=2/4/8;
SPOS supernet step vs the same path as a plain network (the baseline); PNAS children trained
concurrently vs one at a time (the baseline). The record is labelled with the device and the
date (``nas_tutorial.run.records``) so notebooks can show it on other machines.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench_* scripts


def _table(rows):
    print(f"\n{'method':<9} {'case':<34} {'time':>10} {'peak MB':>8} {'ratio':>6}  baseline")
    for r in rows:
        peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
        print(f"{r['method']:<9} {r['case']:<34} {r['time']:>10} {peak:>8} "
              f"{r['ratio']:>6.2f}  {r['baseline']}")


def main(argv=None) -> list:
    import torch

    import bench_pc_darts
    import bench_pnas
    import bench_spos
    from nas_tutorial.run import records as runs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and children")
    p.add_argument("--no-record", action="store_true", help="do not write data/runs/")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    steps = ["--steps", "2" if args.quick else "5"]
    rows = []

    pc = bench_pc_darts.main((["--device", "cuda", "--batch", "256"] if cuda else ["--rounds", "2"])
                             + steps)
    for r in pc:
        rows.append({"method": "PC-DARTS" if r["k"] > 1 else "DARTS",
                     "case": f"search step K={r['k']}, batch {r['batch']}",
                     "time": f"{r['step_s']:.3f} s", "peak_mb": r["peak_mb"],
                     "ratio": r["time_ratio"], "baseline": "DARTS K=1 step time",
                     "memory_ratio": r["memory_ratio"], "raw": r})
        if "layout" in r:
            lay = r["layout"]
            ok = lay["nhwc_ratio"] is not None
            rows.append({"method": "PC-DARTS" if r["k"] > 1 else "DARTS",
                         "case": f"layout K={r['k']}: NHWC vs NCHW",
                         "time": (f"{lay['nhwc_s']:.2f}/{lay['nchw_s']:.2f} s" if ok
                                  else "NHWC failed"), "peak_mb": None,
                         "ratio": lay["nhwc_ratio"] if ok else float("nan"),
                         "baseline": "same step in NCHW", "raw": lay})
        if "cells" in r:
            cells = r["cells"]
            rows.append({"method": "PC-DARTS" if r["k"] > 1 else "DARTS",
                         "case": f"cells K={r['k']}: fused vs unfused",
                         "time": f"{cells['fused_s']:.2f}/{cells['unfused_s']:.2f} s",
                         "peak_mb": None, "ratio": cells["fused_ratio"],
                         "baseline": "same step, unfused cells", "raw": cells})

    sp = bench_spos.main((["--device", "cuda", "--config", "cifar", "--batch", "256"]
                          if cuda else []) + ["--steps", "5" if args.quick else "20"])
    for r in sp:
        rows.append({"method": "SPOS", "case": r["what"][:34],
                     "time": f"{r['supernet_ms']:.1f} ms", "peak_mb": None,
                     "ratio": r["ratio"], "baseline": "same path as a plain network",
                     "raw": r})

    pn = bench_pnas.main(["--children", "4" if args.quick else "8", "--workers", "2"]
                         + (["--preset", "full", "--epochs", "1"] if cuda else []))
    for r in pn:
        rows.append({"method": "PNAS", "case": f"{r['children']} children, {r['workers']} at once",
                     "time": f"{r['seconds']:.1f} s", "peak_mb": None,
                     "ratio": 1 / r["speedup"], "baseline": "one child at a time",
                     "raw": r})

    _table(rows)
    if not args.no_record:
        path = runs.record("benchmarks", {"rows": rows, "quick": args.quick})
        print(f"\nrecorded: {path}")
    return rows


if __name__ == "__main__":
    main()
