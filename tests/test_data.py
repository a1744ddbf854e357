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


@pytest.mark.parametrize("error, words", [
    ("gaierror", "no network: the download server's name could not be resolved"),
    ("timeout", "no network: the download timed out"),
])
def test_a_failed_download_says_why_in_words(error, words, tmp_path, monkeypatch):
    """Issue 28: notebook 00 printed a raw ``<urlopen error [Errno -2] ...>``."""
    import socket
    import urllib.error

    import torchvision

    reason = socket.gaierror(-2, "Name or service not known") if error == "gaierror" \
        else socket.timeout("timed out")

    def offline(*a, **k):
        raise urllib.error.URLError(reason)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetUnavailable) as err:
        nt.data.load("cifar10", root=tmp_path)
    assert words in str(err.value) and "urlopen" not in str(err.value)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="choose one of"):
        nt.data.load("imagenet")


def _write_idx(path, array):
    import gzip

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def _fake_fashion(folder, n_train=30, n_test=20):
    import numpy as np

    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return raw


def test_read_idx_reads_the_mnist_format(tmp_path):
    import numpy as np

    from nas_tutorial.data import read_idx

    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.gz", a)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), a)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")  # float idx
    with pytest.raises(ValueError, match="uint8 idx"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_from_torchvision_folder_without_network(tmp_path, monkeypatch):
    import torchvision

    _fake_fashion(tmp_path)
    monkeypatch.setattr(nt.data, "_debian_folder", lambda *a: None)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST",
                        lambda *a, **k: pytest.fail("must not download"))
    train = nt.data.load("fashion_mnist", root=tmp_path)
    test = nt.data.load("fashion_mnist", train=False, root=tmp_path, size=16)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (20, 1, 16, 16) and test.num_classes == 10
    assert train.labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    sub = nt.data.load("fashion_mnist", root=tmp_path, n=10)
    assert len(sub) == 10


def test_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    raw = _fake_fashion(tmp_path / "pkg")
    monkeypatch.setattr(nt.data, "_debian_folder", lambda *a: raw)
    assert nt.data.find_fashion_mnist(tmp_path / "empty") == raw
    assert len(nt.data.load("fashion_mnist", root=tmp_path / "empty")) == 30


def test_corrupt_fashion_mnist_is_one_line(tmp_path, monkeypatch):
    raw = _fake_fashion(tmp_path)
    data = (raw / "train-images-idx3-ubyte.gz").read_bytes()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])  # truncated
    monkeypatch.setattr(nt.data, "_debian_folder", lambda *a: None)
    with pytest.raises(DatasetUnavailable) as err:
        nt.data.load("fashion_mnist", root=tmp_path)
    assert "\n" not in str(err.value) and "digits" in str(err.value)


def test_fashion_mnist_missing_offline_is_one_line(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(nt.data, "_debian_folder", lambda *a: None)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    for download in (True, False):
        with pytest.raises(DatasetUnavailable) as err:
            nt.data.load("fashion_mnist", root=tmp_path, download=download)
        msg = str(err.value)
        assert "\n" not in msg and "dataset-fashion-mnist" in msg and "digits" in msg


def test_holdout_has_exact_nested_sizes():
    ds = nt.data.load("digits")
    # images that carry their own index: which ones landed where
    ds = nt.data.ImageDataset("ids", torch.arange(len(ds)).view(-1, 1, 1, 1), ds.labels, 10,
                              (0.5,), (0.25,))
    train, valid = nt.data.holdout(ds, 300, 500)
    ids = lambda part: set(part.images.flatten().tolist())
    assert not ids(train) & ids(valid)                         # no validation image is trained on
    bigger, valid2 = nt.data.holdout(ds, 300, 800)
    assert len(train) == 500 and len(valid) == 300 and len(bigger) == 800
    assert torch.equal(valid.images, valid2.images)           # the validation set is fixed
    assert torch.equal(train.images, bigger.images[:500])     # subsets are nested
    with pytest.raises(ValueError, match="valid must be"):
        nt.data.holdout(ds, len(ds))


def test_installed_fashion_mnist_is_the_real_set():
    if nt.data.find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST is not installed here (make setup installs it)")
    train = nt.data.load("fashion_mnist", size=16)
    test = nt.data.load("fashion_mnist", train=False)
    assert len(train) == 60000 and len(test) == 10000 and train.shape == (1, 16, 16)
    assert train.labels.bincount().tolist() == [6000] * 10


# -- issue 29: API arguments are checked where they are given ---------------------------------
@pytest.mark.parametrize("call, words", [
    (lambda: nt.data.load("digits", n=-5), "n must be a whole number of at least 1"),
    (lambda: nt.data.load("digits", n=0), "n must be"),
    (lambda: nt.data.load("digits", n=2.5), "n must be"),
    (lambda: nt.data.load("digits", size=0), "size must be a whole number"),
    (lambda: nt.data.split(nt.data.synthetic(10, (1, 4, 4)), 1.5), "fraction must be between 0 and 1"),
    (lambda: nt.data.split(nt.data.synthetic(10, (1, 4, 4)), float("nan")), "fraction must be"),
    (lambda: nt.data.split(nt.data.synthetic(10, (1, 4, 4)), 0.01), "leaves one part empty"),
])
def test_bad_data_arguments_are_value_errors_naming_the_argument(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_evaluating_or_training_on_no_images_says_so():
    net = nt.network.NetworkCIFAR("DARTS_V2", 8, 10, 2, in_channels=1)  # a name is accepted
    empty = nt.data.synthetic(4, (1, 8, 8)).subset(torch.arange(0))
    with pytest.raises(ValueError, match="data holds no images"):
        nt.training.evaluate(net, empty)
    with pytest.raises(ValueError, match="data holds no images"):
        nt.training.train(net, empty, nt.TrainConfig(epochs=1), progress=False)
