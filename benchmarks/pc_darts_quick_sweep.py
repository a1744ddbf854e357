"""Which quick PC-DARTS search finds a cell a learner can believe? A sweep, measured.

For each protocol (overrides of the ``quick`` search config: steps, warm-up share, arch
lr, weight lr) and each search seed, run the search, then retrain the derived genotype with
the ``pc-darts`` table's own protocol (``tables.retrain``, run seed = search seed) and place
its test accuracy among the table's random cells (percentile). Also recorded per run: the
genotype, its parameter-free ops in the normal cell per epoch, skip_connects per epoch,
search seconds. Runs go to a worker pool (one process and one torch thread each) and each
finished run is added to the JSON file at once; re-running skips finished runs.

Seeds are chosen before looking: the protocol is chosen on tuning seeds (100, 101), the
goals are measured on seeds 0-4 with the chosen protocol only.

    python benchmarks/pc_darts_quick_sweep.py --protocols old-quick w50 w25 w50-alr3 \\
        w50-lr025 --seeds 100 101 --out data/runs/pc-darts-quick-sweep.json   # the tuning
    python benchmarks/pc_darts_quick_sweep.py --protocols quick --seeds 0 1 2 3 4 \\
        --kind pc-darts-quick-study --out data/runs/pc-darts-quick-study.json  # the goals
    python benchmarks/pc_darts_quick_sweep.py --protocols quick --seeds 0 1 2 3 4 \\
        --kind pc-darts-quick-restudy --out data/runs/pc-darts-quick-restudy.json  # again,
        # with the search step's later exact rewrites (another draw, same protocol)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import time
from pathlib import Path

# Overrides of pc_darts.get_config("pc-darts", "quick"). 4,000 images: halves of 2,000, so
# steps_per_epoch=None is 31 batches of 64 per epoch.
PROTOCOLS = {
    "quick": {},                                                         # the preset as it is
    "no-warmup": {"warmup_epochs": 0},                                   # alpha moves from step 1
    "long": {"preset": "long"},                                          # the longer preset
    # the tuning sweep (absolute settings on the quick data, batch 64, arch lr 6e-3, lr 0.1)
    "old-quick": {"epochs": 6, "steps_per_epoch": 6, "warmup_epochs": 2},  # 36 steps
    "w50": {"epochs": 4, "steps_per_epoch": None, "warmup_epochs": 2},   # 124 steps, half warm-up
    "w25": {"epochs": 4, "steps_per_epoch": None, "warmup_epochs": 1},   # quarter warm-up
    "w50-alr3": {"epochs": 4, "steps_per_epoch": None, "warmup_epochs": 2, "arch_lr": 3e-3},
    "w50-lr025": {"epochs": 4, "steps_per_epoch": None, "warmup_epochs": 2, "lr": 0.025},
    "w0": {"epochs": 4, "steps_per_epoch": None, "warmup_epochs": 0},    # no warm-up
}


def run_one(job):
    name, overrides, seed, retrain, method = job
    import torch

    from nas_tutorial import pc_darts
    from nas_tutorial.run import tables

    torch.set_num_threads(1)
    overrides = dict(overrides)
    preset = overrides.pop("preset", "quick")
    cfg = pc_darts.get_config(method, preset, seed=seed, cpu_threads=1, **overrides)
    t0 = time.perf_counter()
    res = pc_darts.search(cfg, device="cpu", progress=False)
    search_s = time.perf_counter() - t0
    h = res.history
    row = {"protocol": name, "method": method, "overrides": overrides, "seed": seed,
           "genotype": res.genotype.to_dict(),
           "param_free_normal": pc_darts.param_free_count(res.genotype),
           "param_free_per_epoch": [pc_darts.param_free_count(g) for g in h.genotypes()],
           "skips_per_epoch": [sum(op == "skip_connect" for op, _ in g.normal)
                               for g in h.genotypes()],
           "search_valid_acc": h.valid_acc[-1], "search_s": search_s, "C": cfg.C,
           "train_images": cfg.train_images,
           "history": {k: v for k, v in h.to_dict().items() if k != "steps"},
           "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
           "warmup_epochs": cfg.warmup_epochs, "arch_lr": cfg.arch_lr, "lr": cfg.lr,
           "edge_norm": cfg.edge_norm, "k": cfg.k}
    if retrain:
        placed = tables.retrain("pc-darts", res.genotype.to_dict(), seed, "quick", "cpu")
        row.update({"retrain_accuracy": placed["accuracy"],
                    "reference_percentile": placed["percentile"],
                    "random_median": placed["random_median"], "retrain_s": placed["seconds"]})
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocols", nargs="+", default=["quick"],
                   choices=sorted(PROTOCOLS))
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    p.add_argument("--method", default="pc-darts", choices=["pc-darts", "darts"])
    p.add_argument("--edge-norm", choices=["on", "off"], default=None,
                   help="override edge normalization (default: the method's)")
    p.add_argument("--no-retrain", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="pc_darts_sweep.json")
    p.add_argument("--kind", default="pc-darts-quick-sweep",
                   help="the record's kind (nas_tutorial.run.records.load_runs finds it by it)")
    a = p.parse_args(argv)

    import torch

    from nas_tutorial.checkpoints import write_json

    out = Path(a.out)
    record = json.loads(out.read_text()) if out.exists() else {
        "kind": a.kind, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created": time.strftime("%Y-%m-%d"), "device": f"CPU {platform.machine()}, 1 thread "
        "per run", "torch": torch.__version__, "script": "benchmarks/pc_darts_quick_sweep.py",
        "rows": []}

    def key(r):
        return (r["protocol"], r["method"], r["overrides"].get("edge_norm"), r["seed"],
                "retrain_accuracy" in r)

    done = {key(r) for r in record["rows"]}
    jobs = []
    for name in a.protocols:
        overrides = dict(PROTOCOLS[name])
        if a.edge_norm is not None:
            overrides["edge_norm"] = a.edge_norm == "on"
        for seed in a.seeds:
            job = (name, overrides, seed, not a.no_retrain, a.method)
            k = (name, a.method, overrides.get("edge_norm"), seed, not a.no_retrain)
            if k not in done:
                jobs.append(job)
    print(f"{len(jobs)} runs to do", flush=True)
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for row in pool.imap_unordered(run_one, jobs):
            record["rows"].append(row)
            record["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            write_json(out, record, strict=True)  # atomic; NaN -> null
            print(row["protocol"], row["seed"], row["genotype"]["normal"],
                  "pf", row["param_free_normal"], "acc", row.get("retrain_accuracy"),
                  "pct", row.get("reference_percentile"), f"{row['search_s']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
