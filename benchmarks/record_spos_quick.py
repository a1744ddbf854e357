"""Record the quick SPOS run that notebook 04 loads: ``data/runs/spos-quick-seed0/``.

1. ``nas-tutorial search spos --preset quick --seed 0 --out data/runs/spos-quick-seed0``
   (trains the supernet, ranks the table's paths, evolution vs random, ``summary.json``);
2. the notebook's five-seed study (search seeds 0-4) and its recalibration demo on that
   supernet, so the fitness cache beside it holds every path the notebook evaluates;
3. the HTML and SVG figures are removed (the notebook draws its own).

    python benchmarks/record_spos_quick.py      # about 10 minutes on one CPU core
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    from nas_tutorial import spos
    from nas_tutorial.run import records as runs
    from nas_tutorial.run.cli import main as cli

    out = ROOT / "data" / "runs" / "spos-quick-seed0"
    if cli(["--threads", "1", "search", "spos", "--preset", "quick", "--seed", "0",
            "--out", str(out)]) != 0:
        raise SystemExit("search spos failed")
    cfg = spos.get_config("quick", seed=0)
    train_ds, valid_ds = spos.load_data(cfg, "cpu")
    supernet, _, source = runs.load_supernet(cfg, train_ds, "cpu", folders=[out])
    assert source == (out / "supernet.pt").resolve(), source
    ev = spos.PathEvaluator(supernet, train_ds, valid_ds, cfg.recal_batches,
                            cfg.recal_batch_size, amp=cfg.amp, seed=cfg.seed)
    ev.load_cache(out / "fitness.json")
    for k in range(8):  # notebook 04, section 4
        ev(spos.random_path(cfg.supernet, random.Random(k)))
    spos.search_study(ev, cfg, seeds=range(5))
    ev.save_cache(out / "fitness.json")
    for f in list(out.glob("*.html")) + list(out.glob("*.svg")):
        f.unlink()
    print(f"{len(ev.cache)} fitnesses cached in {out / 'fitness.json'}")


if __name__ == "__main__":
    main()
