import os
from dataclasses import replace

import pytest
import torch

# The device the ``cuda`` tests run on: CUDA, or the CPU for a dry run of those tests
# (``NAS_TUTORIAL_TEST_DEVICE=cpu``, what ``make gpu-check DRY=1`` sets).
TEST_DEVICE = os.environ.get("NAS_TUTORIAL_TEST_DEVICE", "cuda")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fashion: runs on the real quick presets (Fashion-MNIST), not on digits")
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU (skipped without one; NAS_TUTORIAL_TEST_DEVICE=cpu "
                   "runs them on the CPU)")


def pytest_collection_modifyitems(config, items):
    if torch.device(TEST_DEVICE).type != "cuda" or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU here (make gpu-check runs these on one)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def test_device():
    return torch.device(TEST_DEVICE)


@pytest.fixture(autouse=True)
def _seed():
    # Each test starts from the same RNG state, whatever ran before it.
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _digits_quick(request, monkeypatch):
    """Unit tests run the quick presets on scikit-learn's digits: bundled, tiny, and the
    same on every machine. Tests marked ``fashion`` see the real presets."""
    if request.node.get_closest_marker("fashion"):
        from nas_tutorial.data import find_fashion_mnist

        if find_fashion_mnist() is None:
            pytest.skip("Fashion-MNIST is not installed here (make setup installs it)")
        yield
        return
    from nas_tutorial import config, pc_darts, pnas, spos

    monkeypatch.setitem(config.PRESETS, "quick", replace(
        config.PRESETS["quick"], dataset="digits", train_images=None))
    for name in ("quick", "quick-darts", "long", "long-darts"):
        monkeypatch.setitem(pc_darts.PRESETS, name, replace(pc_darts.PRESETS[name],
                                                            dataset="digits"))
    monkeypatch.setitem(spos.PRESETS, "quick", replace(
        spos.PRESETS["quick"], dataset="digits", valid_fraction=0.2, train_images=None,
        valid_images=300, epochs=30))
    quick = pnas.PNAS_PRESETS["quick"]
    monkeypatch.setitem(pnas.PNAS_PRESETS, "quick", replace(
        quick, dataset="digits", valid_fraction=0.2, valid_images=None, train_images=None,
        train=replace(quick.train, epochs=2, batch_size=32)))
    yield
