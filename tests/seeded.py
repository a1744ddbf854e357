"""Small seeded searches on the quick presets, what a refactor must not change.

``results(seeds)`` runs PC-DARTS (2 epochs on 512 images), SPOS (a 2-epoch supernet on 1,000
images, then evolution and random search) and PNAS (the whole quick search through the table
oracle) for each seed, through the library calls every version since issue 24 has, and
returns what each picked. ``python tests/seeded.py OUT.json`` records them with the
machine's fingerprint; run it with ``PYTHONPATH`` pointing at an older checkout to record
that version (tests/data/seeded_quick.json was recorded from the commit before issue 25's
refactor). ``tests/test_architecture.py`` compares today's code with the record.
"""
import json
import sys

import torch


def pc_darts_genotype(seed: int) -> dict:
    from nas_tutorial import pc_darts

    # the unfused cells and optimizers, whose sums the record holds (the fused ones add them
    # in another order; test_pc_darts holds them equal); versions before them had no flag
    fused = {"fused": False} if "fused" in pc_darts.SearchConfig.__dataclass_fields__ else {}
    cfg = pc_darts.get_config("pc-darts", "quick", epochs=2, warmup_epochs=1,
                              train_images=512, seed=seed, **fused)
    return pc_darts.search(cfg, device="cpu", progress=False).genotype.to_dict()


def spos_best_path(seed: int) -> list:
    from nas_tutorial import spos

    cfg = spos.get_config("quick", epochs=2, train_images=1000, valid_images=500,
                          population=6, generations=2, topk=2, n_mutation=3, n_crossover=3,
                          seed=seed)
    train_ds, valid_ds = spos.load_data(cfg, "cpu")
    torch.manual_seed(cfg.seed)
    supernet = spos.Supernet(cfg.supernet)
    spos.train_supernet(supernet, train_ds, cfg, "cpu", progress=False)
    evaluator = spos.PathEvaluator(supernet, train_ds, valid_ds, cfg.recal_batches,
                                   cfg.recal_batch_size, amp=cfg.amp, seed=cfg.seed)
    evo, _ = spos.search_pair(evaluator, cfg, seed, progress=False)
    return list(evo.best["path"])


def pnas_best_cell(seed: int) -> str:
    from nas_tutorial import pnas

    cfg = pnas.get_config("quick", oracle="table", seed=seed)
    return pnas.search(cfg, device="cpu", progress=False).best["key"]


def results(seeds=(0, 1)) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the quick presets' setting, and what the record was made with
    try:
        return {str(s): {"pc-darts": pc_darts_genotype(s), "spos": spos_best_path(s),
                         "pnas": pnas_best_cell(s)} for s in seeds}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    import nas_tutorial as nt

    record = {"machine": nt.devices.machine("cpu", threads=1), "results": results()}
    with open(sys.argv[1], "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(json.dumps(record["results"])[:400])
