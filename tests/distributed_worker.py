"""One process of a data-parallel run, started by ``tests/test_distributed.py`` under torchrun
(2 processes, gloo, CPU): a few training steps, a few PC-DARTS and DARTS (unrolled) search
steps, a few SPOS supernet steps (and the same stopped after an epoch and resumed), a PNAS
search with a fake trainer, and a PC-DARTS search stopped after its first epoch (resumed by
the test through the CLI). Each rank saves what it computed to ``OUT/rank{r}.pt``; the test
compares with one process.

The settings live here so that the test's one-process references use the very same ones.
"""
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import torch

import nas_tutorial as nt
from nas_tutorial import distributed, pc_darts, pnas, spos
from nas_tutorial.config import TrainConfig

W = 2  # processes

# Training: drop-path and cutout off (their masks are per rank), no auxiliary head.
TRAIN = TrainConfig(epochs=2, batch_size=16, lr=0.05, drop_path=0.0, cutout=0,
                    steps_per_epoch=3, seed=0)


def train_data():
    return nt.data.synthetic(64, (3, 8, 8), seed=0)


def train_model():
    torch.manual_seed(0)
    return nt.NetworkCIFAR(nt.GENOTYPES["DARTS_V2"], C=4, num_classes=10, layers=3)


# PC-DARTS with partial channels (K=2) and edge normalization, arch steps from the start.
SEARCH = pc_darts.SearchConfig(dataset="synthetic", image_size=8, train_images=128, C=8,
                               layers=3, steps=2, multiplier=2, k=2, epochs=2, batch_size=16,
                               lr=0.05, arch_lr=0.01, warmup_epochs=0, steps_per_epoch=3)
# DARTS (K=1, no edge normalization) with the second-order step.
UNROLLED = replace(SEARCH, method="darts", k=1, edge_norm=False, unrolled=True, epochs=1,
                   steps_per_epoch=2)

# SPOS: a tiny supernet without dropout (its masks are per rank).
SPOS_NET = replace(spos.QUICK, name="tiny", stage_repeats=(1, 2, 1),
                   stage_channels=(16, 24, 32), stem_channels=8, last_channels=32,
                   image_size=8, dropout=0.0)
SPOS = replace(spos.PRESETS["quick"], supernet=SPOS_NET, dataset="synthetic", epochs=2,
               batch_size=16, lr=0.05, amp=False, sampling="uniform")


def spos_data():
    return nt.data.synthetic(48, (1, 8, 8), seed=0)


PNAS = replace(pnas.PNAS_PRESETS["quick"], dataset="synthetic", blocks=2, beam=3,
               ops=("sep_conv_3x3", "max_pool_3x3"), fit_steps=10, embed=8, hidden=8,
               ensemble=2, random_baseline=True, workers=2)


def toy_accuracy(cell) -> float:
    """A fake child's accuracy: a function of the cell alone, as a real child's is."""
    convs = sum(op.startswith("sep") for op, _ in cell) / len(cell)
    return 0.3 + 0.5 * convs + 0.05 * (zlib.crc32(pnas.cell_key(cell).encode()) % 1000 / 1000)


def params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


class StopAfterFirstEpoch(Exception):
    pass


def stop(history):
    raise StopAfterFirstEpoch  # as a kill after the first checkpoint


def main(out: Path) -> None:
    distributed.init("cpu")
    r = distributed.rank()
    results = {"world_size": distributed.world_size()}

    model = train_model()
    history = nt.train(model, train_data(), TRAIN, device="cpu", progress=False)
    results["train"] = {"params": params(model), "loss": history.train_loss}

    res = pc_darts.search(SEARCH, out=out / f"pc-run-rank{r}", device="cpu", progress=False)
    results["pc_darts"] = {"params": params(res.network), "genotype": res.genotype.to_dict(),
                           "loss": res.history.train_loss}
    res = pc_darts.search(UNROLLED, device="cpu", progress=False)
    results["unrolled"] = {"params": params(res.network), "genotype": res.genotype.to_dict()}
    try:
        pc_darts.search(SEARCH, out=out / "resume-run", device="cpu", progress=False,
                        callback=stop)
    except StopAfterFirstEpoch:
        pass

    paths, sample = [], spos.sample_path

    def recording(*args, **kwargs):
        paths.append(sample(*args, **kwargs))
        return paths[-1]

    spos.sample_path = recording
    torch.manual_seed(0)
    supernet = spos.Supernet(SPOS_NET)
    spos.train_supernet(supernet, spos_data(), SPOS, device="cpu",
                        checkpoint=out / f"supernet-rank{r}.pt", progress=False)
    spos.sample_path = sample
    results["spos"] = {"paths": paths, "params": params(supernet)}
    torch.manual_seed(0)  # the same supernet stopped after its first epoch, then resumed
    try:
        spos.train_supernet(spos.Supernet(SPOS_NET), spos_data(), SPOS, device="cpu",
                            checkpoint=out / "supernet-resume.pt", progress=False,
                            callback=stop)
    except StopAfterFirstEpoch:
        pass
    torch.manual_seed(1)  # another init: the checkpoint must replace it
    supernet = spos.Supernet(SPOS_NET)
    spos.train_supernet(supernet, spos_data(), SPOS, device="cpu",
                        checkpoint=out / "supernet-resume.pt", progress=False)
    results["spos"]["resumed"] = params(supernet)

    trained = []

    def fake_trainer(cells):
        trained.extend(pnas.cell_key(c) for c in cells)
        return [toy_accuracy(c) for c in cells]

    res = pnas.search(PNAS, train_fn=fake_trainer, run_dir=out / f"pnas-run-rank{r}",
                      progress=False)
    results["pnas"] = {"evaluated": res.evaluated, "levels": res.levels, "trained": trained}

    torch.save(results, out / f"rank{r}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
