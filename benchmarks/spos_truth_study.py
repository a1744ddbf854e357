"""Record SPOS's evolution-against-random study in truth: ``data/runs/spos-quick[-channels]-
truth-study.json``.

On the one recorded quick supernet of the space (``data/runs/spos-quick[-channels]-seed0``,
the paper's setting: train once, search many times), search seeds 0-19 (fixed before
looking) each run evolution and a random search with as many evaluations; the best path of
each is judged by its truth, the mean of four stand-alone trainings with the ``spos``
table's protocol (:func:`nas_tutorial.run.compare.spos_truth_study`). The trainings are
kept in ``...-truth-study.partial.json`` as they go (run it again to resume), which goes
once the study is recorded.

    python benchmarks/spos_truth_study.py --space channels   # about an hour on one core
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", choices=("blocks", "channels"), default="blocks")
    p.add_argument("--seeds", type=int, default=20)
    args = p.parse_args()

    import torch

    from nas_tutorial import spos
    from nas_tutorial.groundtruth import TableError
    from nas_tutorial.run import compare, records, tables

    torch.set_num_threads(1)
    cfg = spos.get_config("quick", space=args.space, seed=0)
    name = records.run_folder(cfg).name
    folder = ROOT / "data" / "runs" / name
    train_ds, valid_ds = spos.load_data(cfg, "cpu")
    supernet, _, source = records.load_supernet(cfg, train_ds, "cpu", folders=[folder])
    if source is None:
        raise SystemExit(f"no recorded supernet in {folder}: run `nas-tutorial search spos "
                         f"--space {args.space} --out {folder}` first")
    ev = spos.PathEvaluator(supernet, train_ds, valid_ds, cfg.recal_batches,
                            cfg.recal_batch_size, amp=cfg.amp, seed=cfg.seed)
    ev.load_cache(folder / "fitness.json")
    try:
        table = tables.spos_table(cfg)
    except TableError:
        table = None
    spec = tables.spec("spos", "quick", "cpu", space=args.space)
    partial = ROOT / "data" / "runs" / f"{name.removesuffix('-seed0')}-truth-study.partial.json"
    study = compare.spos_truth_study(ev, cfg, spec.train, seeds=range(args.seeds), train_seeds=4,
                                     table=table, cache=partial)
    ev.save_cache(folder / "fitness.json")
    out = records.record("spos-truth-study", study, device="cpu",
                         name=f"{name.removesuffix('-seed0')}-truth-study")
    partial.unlink(missing_ok=True)  # the record holds every training
    d = study["difference"]
    print(f"{out}: evolution - random in truth {d['mean']:+.4f} "
          f"[{d['low']:+.4f}, {d['high']:+.4f}], evolution >= random in "
          f"{study['evolution_at_least_random']} of {len(study['seeds'])} seeds")


if __name__ == "__main__":
    main()
