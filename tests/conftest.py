from dataclasses import replace

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fashion: runs on the real quick presets (Fashion-MNIST), not on digits")


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
