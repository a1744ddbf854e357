"""The ``gpu`` presets at a size a CPU runs in seconds, on scikit-learn's digits (or
``synthetic``: three channels): the notebooks' GPU code paths checked without a GPU
(``test_notebooks_gpu_preset.py``). Sizes that batches do not divide, so that the counted
work's rounding is tested (``test_gpu_preset.py``)."""
from dataclasses import replace


def tiny_presets(dataset: str = "digits") -> dict:
    """{(module, preset dict name): tiny gpu config} for every method."""
    from nas_tutorial import config, pc_darts, pnas, spos
    from nas_tutorial.data import CHANNELS

    gpu = config.PRESETS["gpu"]
    net = replace(spos.QUICK, name="gpu", stage_repeats=(1, 1, 1), stage_channels=(8, 16, 24),
                  stem_channels=4, last_channels=16, image_size=8,
                  in_channels=CHANNELS[dataset])  # the budget inside this data's range
    lo, hi = spos.space_range(net)["flops"]
    return {
        (config, "PRESETS"): replace(gpu, dataset=dataset, image_size=8, channels=4, layers=2,
                                     train_images=100, train=replace(gpu.train, epochs=2,
                                                                     batch_size=16)),
        (pnas, "PNAS_PRESETS"): replace(
            pnas.PNAS_PRESETS["gpu"], dataset=dataset, image_size=8, valid_images=64,
            train_images=64, channels=4, cells_per_stage=0,
            train=replace(pnas.PNAS_PRESETS["gpu"].train, epochs=1, batch_size=16)),
        (pc_darts, "PRESETS"): replace(
            pc_darts.PRESETS["gpu"], dataset=dataset, image_size=8, train_images=100, C=4,
            layers=2, steps=2, multiplier=2, batch_size=8, epochs=3, warmup_epochs=1),
        (spos, "PRESETS"): replace(
            spos.PRESETS["gpu"], supernet=net, dataset=dataset, image_size=8,
            valid_fraction=0.2, train_images=70, valid_images=40, epochs=2, batch_size=16,
            recal_batches=1, recal_batch_size=16, population=4, generations=2, topk=2,
            n_mutation=1, n_crossover=1, flops_limit=(lo + hi) / 2, ranking_paths=2,
            ranking_epochs=1),
    }


def shrink(dataset: str = "digits") -> None:
    """Install the tiny presets in this process (a notebook's kernel)."""
    for (module, name), cfg in tiny_presets(dataset).items():
        getattr(module, name)["gpu"] = cfg
