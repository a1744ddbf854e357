"""Datasets that live on the device, and a loader that augments there.

Small image sets fit in device memory as uint8 (CIFAR-10: 150 MB), so the fastest loader is
no loader: index a resident tensor, crop/flip/cutout/normalize with tensor ops on the same
device, and never touch the host inside an epoch (the data-loader stall that SPOS's
official code suffered from, see ``performance.md``). Augmentation is the DARTS one
(random crop with 4-pixel padding at 32x32, horizontal flip, optional cutout).

Datasets: ``cifar10``, ``cifar100`` through torchvision (downloaded into ``data/``);
``fashion_mnist`` (Xiao et al. 2017: 70,000 28x28 grey images of clothes, 10 classes), the
``quick`` preset's real data, found offline wherever it can be (see :func:`find_fashion_mnist`);
``digits``, scikit-learn's bundled 8x8 handwritten digits (1,797 real images, offline, the
zero-dependency fallback and the unit tests' data), upscaled; ``synthetic``, random
class-dependent tensors of any shape.
"""
from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .devices import resolve_device  # noqa: F401  (nt.data.resolve_device, as before)

DATASETS = ("cifar10", "cifar100", "fashion_mnist", "digits", "synthetic")
OFFLINE = ("digits", "synthetic")
CHANNELS = {"cifar10": 3, "cifar100": 3, "fashion_mnist": 1, "digits": 1, "synthetic": 3}
CLASSES = {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10, "digits": 10, "synthetic": 10}
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"  # Debian/Ubuntu: the four *-ubyte.gz files


class DatasetUnavailable(RuntimeError):
    """A dataset could not be loaded (no network, no files); the message names the offline
    choices."""


def default_root() -> Path:
    """``data/`` of the repository (or ``$NAS_TUTORIAL_DATA``)."""
    env = os.environ.get("NAS_TUTORIAL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class ImageDataset:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64, on one device."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple  # per channel, on the 0..1 scale
    std: tuple
    flip: bool = True  # horizontal flip is a valid augmentation (not for digits)

    def __len__(self) -> int:
        return self.images.size(0)

    @property
    def shape(self) -> tuple:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def to(self, device) -> "ImageDataset":
        device = resolve_device(device)
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def subset(self, index) -> "ImageDataset":
        return replace(self, images=self.images[index], labels=self.labels[index])

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name}: {len(self)} images of {self.shape}, "
                f"{self.num_classes} classes, on {self.images.device})")


# -- loading ----------------------------------------------------------------------------
_TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "fashion_mnist": "FashionMNIST"}
_STATS = {  # per-channel mean/std of the training sets (DARTS utils.py for CIFAR)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}


def _shown(root) -> str:
    """``data/`` for the default root, else the folder as given (for one-line messages)."""
    return "data/" if Path(root).resolve() == default_root().resolve() else str(root)


def _reason(e: BaseException) -> str:
    """Why a download failed, in words: no network, a timeout, or the error's first line
    (not ``<urlopen error [Errno -2] Name or service not known>``)."""
    import urllib.error

    inner = getattr(e, "reason", None) if isinstance(e, urllib.error.URLError) else None
    if isinstance(inner, socket.gaierror) or isinstance(e, socket.gaierror):
        return "no network: the download server's name could not be resolved"
    if isinstance(inner, (socket.timeout, TimeoutError)) or isinstance(e, (socket.timeout,
                                                                           TimeoutError)):
        return "no network: the download timed out"
    if isinstance(inner, ConnectionError) or isinstance(e, ConnectionError):
        return "no network: the connection was refused"
    text = str(inner if inner is not None else e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_torchvision(name, train, root, download, timeout_s=30.0):
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # a blocked network must fail, not hang
    try:
        ds = cls(root=str(root), train=train, download=download)
    except Exception as e:  # no network, refused, corrupt archive, missing files
        raise DatasetUnavailable(
            f"could not load {name} into {_shown(root)} ({_reason(e)}); offline choices: "
            f"{offline_choices(name)}") from None
    finally:
        socket.setdefaulttimeout(old)
    images = torch.as_tensor(np.asarray(ds.data))
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    mean, std = _STATS[name]
    return ImageDataset(name, images.contiguous(), labels, len(ds.classes), mean, std)


def offline_choices(name: str = "") -> str:
    """The one-line hint every failed load ends with."""
    hint = ", ".join(OFFLINE)
    if name == "fashion_mnist":
        hint = (f"apt-get install {FASHION_MNIST_PACKAGE} (then it loads with no network), "
                f"or the offline sets {hint}")
    return hint


# Fashion-MNIST in the MNIST "idx" format: the same four files in torchvision's folder, in
# the Debian package and on the dataset's own site.
_FASHION_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path) -> np.ndarray:
    """An idx file (gzipped or not) as a numpy array: a 4-byte magic number whose third
    byte is the type (0x08 = uint8) and fourth the number of dimensions, then one
    big-endian int32 per dimension, then the data."""
    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path.name} is not a uint8 idx file")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _debian_folder(package: str = FASHION_MNIST_PACKAGE) -> Path | None:
    """Where the Debian package put its files (``dpkg -L``), or None."""
    if shutil.which("dpkg") is None:
        return None
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.endswith("train-images-idx3-ubyte.gz"):
            return Path(line).parent
    return None


def find_fashion_mnist(root=None) -> Path | None:
    """The folder holding the four Fashion-MNIST files, found without a network: first
    torchvision's layout under ``root`` (``data/FashionMNIST/raw``), then the files of
    the Debian package ``dataset-fashion-mnist``. None when neither has them."""
    root = Path(root) if root is not None else default_root()
    for folder in (root / "FashionMNIST" / "raw", _debian_folder()):
        if folder is not None and all(_idx_file(folder, stem) for pair in
                                      _FASHION_FILES.values() for stem in pair):
            return folder
    return None


# torchvision's folders and files, checked without reading them (a GPU machine in a class
# may have no network: a preset picks its data by what is here).
_TORCHVISION_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]),
    "cifar100": ("cifar-100-python", ["train", "test"]),
}


def on_disk(name: str, root=None) -> bool:
    """Whether ``name`` loads without a network: its files are under ``root`` (default
    ``data/``) in torchvision's layout, Fashion-MNIST also from the Debian package, and
    ``digits`` and ``synthetic`` always."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    if name in OFFLINE:
        return True
    if name == "fashion_mnist":
        return find_fashion_mnist(root) is not None
    folder, files = _TORCHVISION_FILES[name]
    folder = (Path(root) if root is not None else default_root()) / folder
    return all((folder / f).is_file() for f in files)


def _load_fashion_mnist(train, root, download):
    folder = find_fashion_mnist(root)
    if folder is None:
        if not download:
            raise DatasetUnavailable(f"fashion_mnist is not in {_shown(root)} nor installed; "
                                     f"offline choices: {offline_choices('fashion_mnist')}")
        return _load_torchvision("fashion_mnist", train, root, download)
    images_file, labels_file = (_idx_file(folder, stem) for stem in _FASHION_FILES[train])
    try:
        images = torch.from_numpy(read_idx(images_file).copy()).unsqueeze(1)  # (N, 1, 28, 28)
        labels = torch.from_numpy(read_idx(labels_file).astype(np.int64))
    except (OSError, EOFError, ValueError) as e:  # truncated or foreign files
        raise DatasetUnavailable(f"could not read fashion_mnist from {folder} ({e}); "
                                 f"offline choices: {offline_choices()}") from None
    if len(images) != len(labels):
        raise DatasetUnavailable(f"fashion_mnist in {folder} has {len(images)} images but "
                                 f"{len(labels)} labels; offline choices: {offline_choices()}")
    mean, std = _STATS["fashion_mnist"]
    # Flips: a mirrored shirt or shoe is still one, so flipping is a valid augmentation.
    return ImageDataset("fashion_mnist", images.contiguous(), labels, 10, mean, std, flip=True)


def resize(ds: ImageDataset, size: int) -> ImageDataset:
    """Square ``size`` images (antialiased bilinear, as uint8); a no-op at native size."""
    if ds.shape[-1] == size and ds.shape[-2] == size:
        return ds
    x = F.interpolate(ds.images.float(), size=(size, size), mode="bilinear",
                      align_corners=False, antialias=True)
    return replace(ds, images=x.round_().clamp_(0, 255).to(torch.uint8))


def _load_digits(train, size, test_fraction=1 / 6):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.tensor(d.target, dtype=torch.long)
    # A fixed split, independent of any run seed, so every run tests on the same images.
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = int(len(labels) * test_fraction)
    index = perm[n_test:] if train else perm[:n_test]
    # Mean/std over all images: cheap and stable for a 1.8k-image set.
    m, s = float(x.mean()), float(x.std())
    return ImageDataset("digits", images[index], labels[index], 10, (m,), (s,), flip=False)


def synthetic(n: int = 512, shape=(3, 32, 32), num_classes: int = 10, seed: int = 0,
              name: str = "synthetic") -> ImageDataset:
    """Random images whose class shifts a fixed low-frequency pattern: learnable, so loss
    curves move, yet only the shapes matter for benchmarks."""
    g = torch.Generator().manual_seed(seed)
    C, H, W = shape
    templates = torch.rand(num_classes, C, 4, 4, generator=g)
    templates = F.interpolate(templates, size=(H, W), mode="bilinear", align_corners=False)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    noise = torch.rand(n, C, H, W, generator=g)
    images = ((0.6 * templates[labels] + 0.4 * noise) * 255).round().to(torch.uint8)
    return ImageDataset(name, images, labels, num_classes, (0.5,) * C, (0.25,) * C, flip=True)


def load(name: str, train: bool = True, root=None, size: int | None = None,
         download: bool = True, device="cpu", n: int | None = None) -> ImageDataset:
    """Load a dataset by name onto ``device``.

    ``size`` resizes the images to ``size`` x ``size`` (``digits`` default 16 px, the
    ``synthetic`` side default 32; other sets keep their native size unless asked);
    ``n`` keeps ``n`` images (the first ``n`` of a fixed permutation, so smaller subsets
    are nested in larger ones), or is the number of synthetic images. Raises
    :class:`DatasetUnavailable` with a one-line reason naming the offline choices when a
    dataset is neither on disk nor downloadable.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    _check_count("n", n)
    _check_count("size", size)
    # Under torchrun, each machine's first process loads (and downloads) first, the others
    # read what it wrote: N processes writing one archive at once could corrupt it.
    later = distributed.active() and os.environ.get("LOCAL_RANK", "0") != "0"
    if later:
        distributed.barrier()
    ds = _load(name, train, root, size, download, n)
    if distributed.active() and not later:
        distributed.barrier()
    return ds.to(device)


def _load(name, train, root, size, download, n) -> ImageDataset:
    root = Path(root) if root is not None else default_root()
    if name == "fashion_mnist":
        ds = _load_fashion_mnist(train, root, download)
    elif name in _TORCHVISION:
        ds = _load_torchvision(name, train, root, download)
    elif name == "digits":
        ds = _load_digits(train, size or 16)
    else:
        side = size or 32
        ds = synthetic(n or (2048 if train else 512), (3, side, side), seed=0 if train else 1)
    if n is not None and name != "synthetic" and n < len(ds):
        ds = ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n])
    if size is not None:
        ds = resize(ds, size)
    return ds


def _check_count(name: str, value) -> None:
    """A count argument (images, pixels): None, or a whole number of at least 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ValueError(f"{name} must be a whole number of at least 1 (or None), got "
                         f"{value!r}")


def holdout(ds: ImageDataset, valid: int, train: int | None = None, seed: int = 0):
    """``(train, valid)`` parts of a training set with exact sizes: ``valid`` images held
    out for measuring (the search's validation accuracy), then ``train`` of the rest (all
    when None). One fixed permutation, so a smaller ``train`` is nested in a larger one
    and the validation images never change with it."""
    if not 0 < valid < len(ds):
        raise ValueError(f"valid must be between 1 and {len(ds) - 1} images, got {valid}")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    rest = perm[valid:] if train is None else perm[valid:valid + train]
    dev = ds.images.device
    return ds.subset(rest.to(dev)), ds.subset(perm[:valid].to(dev))


def split(ds: ImageDataset, fraction: float = 0.5, seed: int = 0):
    """Two disjoint halves for bilevel search (DARTS Sec. 2.3: weights on one, alphas on
    the other); ``fraction`` goes to the first. Fixed by ``seed``."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):  # NaN fails it too
        raise ValueError(f"fraction must be between 0 and 1 (both parts non-empty), got "
                         f"{fraction!r}")
    if not 0 < int(len(ds) * fraction) < len(ds):
        raise ValueError(f"fraction {fraction} of {len(ds)} images leaves one part empty; "
                         f"use more images or a fraction nearer 0.5")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(ds), generator=g).to(ds.images.device)
    k = int(len(ds) * fraction)
    return ds.subset(perm[:k]), ds.subset(perm[k:])


# -- the device-resident loader -----------------------------------------------------------
def augment(x: torch.Tensor, generator: torch.Generator, pad: int, flip: bool,
            cutout: int = 0) -> torch.Tensor:
    """Random crop (zero padding ``pad``), horizontal flip and cutout on a uint8 batch,
    all as tensor ops on ``x``'s device."""
    B, C, H, W = x.shape
    dev = x.device
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (B,), device=dev, generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (B,), device=dev, generator=generator)
        rows = (oy[:, None] + torch.arange(H, device=dev))[:, None, :, None]  # (B,1,H,1)
        cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, None, :]  # (B,1,1,W)
        xp = xp.gather(2, rows.expand(B, C, H, W + 2 * pad))
        x = xp.gather(3, cols.expand(B, C, H, W))
    if flip:
        mask = torch.rand(B, device=dev, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if cutout > 0:  # DeVries & Taylor 2017: one square of side `cutout`, centre anywhere
        cy = torch.randint(0, H, (B, 1, 1), device=dev, generator=generator)
        cx = torch.randint(0, W, (B, 1, 1), device=dev, generator=generator)
        ys = torch.arange(H, device=dev)[None, :, None]
        xs = torch.arange(W, device=dev)[None, None, :]
        hole = ((ys >= cy - cutout // 2) & (ys < cy + (cutout + 1) // 2)
                & (xs >= cx - cutout // 2) & (xs < cx + (cutout + 1) // 2))
        x = x.masked_fill(hole[:, None], 0)
    return x


class DeviceLoader:
    """Batches from a device-resident :class:`ImageDataset`.

    Each ``iter()`` is one epoch: a fresh permutation (from the loader's own generator, so
    the same seed gives the same batches), then per batch an index, augmentation and
    normalization on the device. ``len()`` is the number of batches; with ``drop_last``
    every batch has exactly ``batch_size`` images (static shapes suit CUDA graphs).
    """

    def __init__(self, ds: ImageDataset, batch_size: int, train: bool = True, seed: int = 0,
                 cutout: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 pad: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.ds = ds
        self.batch_size = min(batch_size, len(ds))
        self.train = train
        self.cutout = cutout
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self.pad = pad if pad is not None else max(1, ds.shape[-1] // 8)  # 4 px at 32x32
        dev = ds.images.device
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(seed)
        self._mean = torch.tensor(ds.mean, device=dev).view(1, -1, 1, 1)
        self._std = torch.tensor(ds.std, device=dev).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n, b = len(self.ds), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float().div_(255.0) - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self):
        n, dev = len(self.ds), self.ds.images.device
        order = (torch.randperm(n, device=dev, generator=self.generator) if self.train
                 else torch.arange(n, device=dev))
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            x = self.ds.images[idx]
            if self.train:
                x = augment(x, self.generator, self.pad, self.ds.flip, self.cutout)
            yield self.normalize(x), self.ds.labels[idx]
