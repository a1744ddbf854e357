"""Run settings as frozen dataclasses, with three named presets.

``quick`` runs on a laptop CPU in minutes on Fashion-MNIST at 16x16 (offline through
Debian's ``dataset-fashion-mnist``, see ``nas_tutorial.data``); ``gpu`` is what a class on
GPU machines gets in a notebook: each notebook in about 5 minutes on one GPU, larger
networks, more data and longer searches than ``quick``, on CIFAR-10 when it is on disk and
Fashion-MNIST otherwise (sized in ``nas_tutorial.run.gpu_budget``); ``full`` is the papers'
setting on CIFAR-10, hours on a GPU. ``get_preset()`` (the command line) picks ``full``
when CUDA is present and ``quick`` otherwise; ``notebook_preset()`` (the notebooks) picks
``gpu`` on CUDA, so ``full`` runs in a notebook only when asked for. ``NAS_TUTORIAL_PRESET``
overrides both. Method-specific configs (search settings) live in the method's module and
follow the same pattern.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace

from .devices import resolve_device


@dataclass(frozen=True)
class TrainConfig:
    """Training a network from scratch (DARTS Sec. A.2 / official ``train.py`` defaults)."""

    epochs: int = 600              # DARTS/PC-DARTS CIFAR-10 evaluation: 600 epochs
    batch_size: int = 96           # images per step (DARTS: 96)
    lr: float = 0.025              # initial SGD learning rate, cosine-annealed
    lr_min: float = 0.0            # cosine floor
    momentum: float = 0.9
    weight_decay: float = 3e-4     # L2 on every weight (DARTS)
    grad_clip: float = 5.0         # max global gradient norm
    auxiliary_weight: float = 0.4  # weight of the auxiliary-head loss (NASNet/DARTS)
    drop_path: float = 0.2         # final drop-path probability, ramped linearly (DARTS 0.2)
    cutout: int = 16               # cutout square side in pixels; 0 = off
    label_smoothing: float = 0.0   # 0 for CIFAR (SPOS uses 0.1 on ImageNet)
    seed: int = 0                  # fixes init, batches and augmentation (on CPU exactly)
    amp: bool = True               # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True     # NHWC memory format (faster on CUDA and, measured, on CPU)
    steps_per_epoch: int | None = None  # cap on steps per epoch (None = the whole set)


@dataclass(frozen=True)
class Preset:
    """What a notebook or the CLI needs to run something sensible on this machine."""

    name: str
    dataset: str                   # one of nas_tutorial.data.DATASETS
    image_size: int | None         # resize images to this side (None = native)
    channels: int                  # C of the evaluation network
    layers: int                    # cells in the evaluation network
    auxiliary: bool                # auxiliary head in evaluation networks
    train: TrainConfig = field(default_factory=TrainConfig)
    train_images: int | None = None  # training images used (a fixed subset); None = all


PRESETS = {
    # About a minute on one CPU thread: Fashion-MNIST at 16x16, 5,000 training images, a
    # 5-cell C=8 network, 3 epochs; tested on all 10,000 test images (binomial SD of the
    # accuracy near 80%: 0.4 points). This is also the pc-darts table's retraining protocol
    # (nas_tutorial.tables); measured there: seed SD and spread in the table's header.
    "quick": Preset(
        name="quick", dataset="fashion_mnist", image_size=16, channels=8, layers=5,
        auxiliary=False, train_images=5000,
        train=TrainConfig(epochs=3, batch_size=64, lr=0.05, drop_path=0.0, cutout=0,
                          grad_clip=5.0),
    ),
    # DARTS/PC-DARTS evaluation on CIFAR-10 (Sec. 4.2): C=36, 20 cells, auxiliary,
    # cutout 16, drop-path 0.2, 600 epochs at batch 96.
    "full": Preset(
        name="full", dataset="cifar10", image_size=None, channels=36, layers=20, auxiliary=True,
        train=TrainConfig(),
    ),
    # A notebook on one GPU (sized in nas_tutorial.run.gpu_budget): the supernet's C=16 and
    # 8 cells at 32 px, trained 10 epochs on all 50,000 images at batch 256. A step of
    # this small network is bound by the host issuing operators, not by the arithmetic, so
    # the large batch is nearly free. CIFAR-10 when on disk, else Fashion-MNIST (gpu_data).
    "gpu": Preset(
        name="gpu", dataset="cifar10", image_size=None, channels=16, layers=8,
        auxiliary=False,
        train=TrainConfig(epochs=10, batch_size=256, lr=0.1, drop_path=0.0, cutout=0),
    ),
}

GPU = "gpu"  # the notebooks' preset on a CUDA machine


def gpu_data(config, name: str, given=()):
    """``config`` of preset ``name`` with the data this machine has: a ``gpu`` preset's
    CIFAR-10 becomes Fashion-MNIST when CIFAR-10 is not on disk (a GPU machine in a
    classroom may have no network: nothing is downloaded for it), unless the dataset was
    asked for (``"dataset" in given``). Every other preset as it is."""
    from .data import on_disk

    if (name.split("-")[0] != GPU or "dataset" in given
            or getattr(config, "dataset", None) != "cifar10" or on_disk("cifar10")):
        return config
    return replace(config, dataset="fashion_mnist")


def get_preset(name: str | None = None, device="auto") -> Preset:
    """``name``, else ``$NAS_TUTORIAL_PRESET``, else by the device the run uses: ``full`` on
    CUDA, ``quick`` on the CPU (``device="cpu"`` on a GPU machine means ``quick``)."""
    name = name or os.environ.get("NAS_TUTORIAL_PRESET") or (
        "full" if resolve_device(device).type == "cuda" else "quick")
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return gpu_data(PRESETS[name], name)


def notebook_preset(name: str | None = None, device="auto") -> Preset:
    """The preset a notebook runs: ``name``, else ``$NAS_TUTORIAL_PRESET``, else ``gpu`` on
    CUDA (each notebook in about 5 minutes on one GPU) and ``quick`` on the CPU. ``full``
    (the papers' settings: hours) only when named."""
    name = name or os.environ.get("NAS_TUTORIAL_PRESET") or (
        GPU if resolve_device(device).type == "cuda" else "quick")
    return get_preset(name, device)


def preset_name(name: str | None = None, device="auto") -> str:
    """The preset name ``get_preset`` would choose, for method configs with own presets."""
    return get_preset(name, device).name


def select(presets: dict, name: str, overrides: dict):
    """The one rule of every method's ``get_config``: the preset ``name``'s config, each
    override replacing its field (None too: ``image_size=None`` is the native size), an
    unknown field refused in one line naming it; a ``gpu`` preset on the data this machine
    has (:func:`gpu_data`). The command line drops the flags not given before it calls
    (``nas_tutorial.run.searches.get_config``)."""
    base = gpu_data(presets[name], name, overrides)
    given = dict(overrides)
    known = [f.name for f in fields(base)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown {type(base).__name__} field(s): {', '.join(unknown)}; "
                         f"the fields are {', '.join(known)}")
    return replace(base, **given)


__all__ = ["TrainConfig", "Preset", "PRESETS", "GPU", "get_preset", "notebook_preset", "gpu_data",
           "preset_name", "select"]
