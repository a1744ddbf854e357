"""How long must the quick SPOS supernet train? A sweep over supernet epochs, measured.

For each number of supernet epochs and each supernet seed (chosen before looking: 0, 1, 2),
train the quick supernet (FLOPs-window sampling, the default), then measure:
- its training accuracy over the last epoch;
- ranking quality against the ``spos`` ground-truth table (every tabulated path): Kendall
  tau of inherited accuracy vs stand-alone accuracy, with BN recalibration (2 and 8
  batches of 128) and without;
- the share of paths whose accuracy recalibration improves;
- evolution vs random search on the preset's budget for search seeds 0-4, on one shared
  fitness cache per supernet: best fitness and the best-so-far curves.
Results go to a JSON file after every configuration (re-running skips finished ones).

    python benchmarks/spos_supernet_sweep.py --epochs 6 20 40 \
        --out data/runs/spos-quick-supernet-sweep.json     # about an hour on one core
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, nargs="+", default=[6, 20, 40])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--recal", type=int, nargs="+", default=[2, 8])
    p.add_argument("--sampling", default="window")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="spos_sweep.json")
    p.add_argument("--keep", default=None, help="folder for the trained supernets")
    a = p.parse_args(argv)

    import torch
    from scipy.stats import kendalltau

    from nas_tutorial import spos
    from nas_tutorial.run import tables

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    done = json.loads(out.read_text())["rows"] if out.exists() else []
    header = {"created": time.strftime("%Y-%m-%d"), "device": f"CPU {platform.machine()}, "
              f"{a.threads} thread(s)", "torch": torch.__version__,
              "script": "benchmarks/spos_supernet_sweep.py", "seeds": a.seeds,
              "search_seeds": a.search_seeds, "sampling": a.sampling}
    table = tables.load("spos", "quick")
    paths = [tuple(r["arch"]) for r in table.rows]
    alone = [table.accuracy(r["key"]) for r in table.rows]
    for seed in a.seeds:
        for epochs in a.epochs:
            if any(d["seed"] == seed and d["epochs"] == epochs for d in done):
                continue
            cfg = spos.get_config("quick", epochs=epochs, seed=seed, sampling=a.sampling)
            train_ds, valid_ds = spos.load_data(cfg, "cpu")
            torch.manual_seed(seed)
            net = spos.Supernet(cfg.supernet)
            t0 = time.perf_counter()
            hist = spos.train_supernet(net, train_ds, cfg, "cpu", progress=False)
            train_s = time.perf_counter() - t0
            if a.keep:
                Path(a.keep).mkdir(parents=True, exist_ok=True)
                torch.save(net.state_dict(), Path(a.keep) / f"seed{seed}-e{epochs}.pt")
            row = {"seed": seed, "epochs": epochs, "sampling": a.sampling,
                   "train_acc": hist["train_acc"][-1], "train_s": train_s, "ranking": {}}
            plain = spos.PathEvaluator(net, train_ds, valid_ds, 2, 128, amp=cfg.amp, seed=seed)
            no_recal = [plain.accuracy(q, recalibrate=False) for q in paths]
            tau, pv = kendalltau(no_recal, alone)
            row["ranking"]["none"] = {"tau": tau, "p": pv, "inherited": no_recal}
            for rb in a.recal:
                ev = spos.PathEvaluator(net, train_ds, valid_ds, rb, 128, amp=cfg.amp, seed=seed)
                acc = [ev.accuracy(q) for q in paths]
                tau, pv = kendalltau(acc, alone)
                better = sum(x > y for x, y in zip(acc, no_recal)) / len(paths)
                row["ranking"][str(rb)] = {"tau": tau, "p": pv, "inherited": acc,
                                           "improved": better}
            ev = spos.PathEvaluator(net, train_ds, valid_ds, cfg.recal_batches,
                                    cfg.recal_batch_size, amp=cfg.amp, seed=seed)
            row["search"] = []
            for s in a.search_seeds:
                evo, rnd = spos.search_pair(ev, cfg, s, progress=False)
                row["search"].append({
                    "search_seed": s, "evolution": evo.best["fitness"],
                    "random": rnd.best["fitness"],
                    "evolution_curve": evo.best_per_generation(),
                    "random_curve": rnd.best_per_generation()})
            row["seconds"] = time.perf_counter() - t0
            done.append(row)
            out.write_text(json.dumps({**header, "rows": done}, indent=1))
            r = row["ranking"]
            wins = sum(x["evolution"] >= x["random"] for x in row["search"])
            print(f"seed {seed} epochs {epochs}: train acc {row['train_acc']:.3f}, tau none "
                  f"{r['none']['tau']:.2f} / " + " / ".join(
                      f"recal{k} {r[k]['tau']:.2f} (improved {r[k]['improved']:.0%})"
                      for k in map(str, a.recal)) + f"; evolution>=random {wins}/"
                  f"{len(row['search'])}; {row['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
