"""Datasets and the device-resident loader."""
import pytest
import torch

import nas_tutorial as nt
from nas_tutorial.data import DatasetUnavailable, DeviceLoader, augment


def test_digits_is_real_offline_data():
    train = nt.data.load("digits", train=True)
    test = nt.data.load("digits", train=False)
    assert train.images.dtype == torch.uint8 and train.shape == (1, 16, 16)
    assert len(train) + len(test) == 1797 and train.num_classes == 10
    assert not train.flip  # a flipped digit is another symbol
    assert set(train.labels.tolist()) == set(range(10))


def test_synthetic_any_shape():
    ds = nt.data.load("synthetic", size=24, n=100)
    assert ds.images.shape == (100, 3, 24, 24)
    small = nt.data.synthetic(10, (2, 5, 7), num_classes=3)
    assert small.images.shape == (10, 2, 5, 7) and small.labels.max() < 3


def test_split_is_disjoint_halves():
    ds = nt.data.load("digits")
    a, b = nt.data.split(ds, 0.5, seed=3)
    assert len(a) + len(b) == len(ds) and abs(len(a) - len(b)) <= 1
    a2, _ = nt.data.split(ds, 0.5, seed=3)
    assert torch.equal(a.images, a2.images)


def test_same_seed_same_batches_different_seed_different():
    ds = nt.data.load("synthetic", n=64, size=16)
    batches = lambda seed: [x for x, _ in DeviceLoader(ds, 16, train=True, seed=seed)]
    first, again, other = batches(1), batches(1), batches(2)
    assert len(first) == 4
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_loader_resumes_from_state():
    ds = nt.data.load("synthetic", n=64, size=16)
    loader = DeviceLoader(ds, 16, seed=5)
    list(loader)
    state = loader.state_dict()
    expected = [x for x, _ in loader]
    fresh = DeviceLoader(ds, 16, seed=0)
    fresh.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(expected, (x for x, _ in fresh)))


def test_eval_loader_keeps_order_and_every_image():
    ds = nt.data.load("digits", train=False)
    ys = torch.cat([y for _, y in DeviceLoader(ds, 64, train=False)])
    assert torch.equal(ys, ds.labels)


def test_augmentation_on_device_crop_flip_cutout():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, pad=2, flip=True, cutout=4)
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    # no pad, no flip, no cutout: identity
    assert torch.equal(augment(x, g, pad=0, flip=False), x)
    # cutout zeroes a square of at most 4x4 pixels per image
    only_cut = augment(x + 1, g, pad=0, flip=False, cutout=4)
    zeros = (only_cut == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 16).all()
    # a crop is a shifted window: each output row is a (possibly zero-padded) input row
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    cropped = augment(x, torch.Generator().manual_seed(1), pad=2, flip=False)
    for b in range(2):
        windows = [xp[b, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(cropped[b], w) for w in windows)


def test_normalized_batches_are_float_and_standardized():
    ds = nt.data.load("digits")
    x, y = next(iter(DeviceLoader(ds, 256, train=False)))
    assert x.dtype == torch.float32 and x.shape == (256, 1, 16, 16)
    assert abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3


def test_failed_download_is_one_line_naming_offline_choices(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetUnavailable) as err:
        nt.data.load("cifar10", root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "digits" in msg and "synthetic" in msg and "cifar10" in msg


def test_unknown_dataset():
    with pytest.raises(ValueError, match="choose one of"):
        nt.data.load("imagenet")
