"""The evaluation network: published genotypes build, run, and have the official sizes."""
import pytest
import torch

import nas_tutorial as nt

# Parameter counts (without the auxiliary head) of the official DARTS ``NetworkCIFAR`` at
# C=36, 20 cells, 10 classes: DARTS_V2 3.349342M and PC_DARTS 3.634678M are what the
# official train.py logs print ("param size = ...MB"); the reference gives 3.3M / 3.6M.
PUBLISHED_PARAMS = {
    "DARTS_V1": 3_169_414,
    "DARTS_V2": 3_349_342,
    "PC_DARTS": 3_634_678,
    "PNASNET_5": 4_481_110,
}


@pytest.mark.parametrize("name", sorted(nt.GENOTYPES))
def test_published_param_counts(name):
    model = nt.NetworkCIFAR(nt.GENOTYPES[name], 36, 10, 20, auxiliary=True)
    assert nt.count_params(model) == PUBLISHED_PARAMS[name]
    assert nt.count_params(model, include_auxiliary=True) > PUBLISHED_PARAMS[name]


def test_rounded_published_figures():
    assert round(PUBLISHED_PARAMS["DARTS_V2"] / 1e6, 1) == 3.3
    assert round(PUBLISHED_PARAMS["PC_DARTS"] / 1e6, 1) == 3.6


@pytest.mark.parametrize("name", sorted(nt.GENOTYPES))
def test_builds_and_runs_with_auxiliary(name):
    model = nt.NetworkCIFAR(nt.GENOTYPES[name], 8, 10, 5, auxiliary=True, drop_path=0.2)
    model.train()
    logits, aux = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    (logits.sum() + aux.sum()).backward()
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_layout_reductions_and_in_channels():
    model = nt.NetworkCIFAR(nt.GENOTYPES["DARTS_V2"], 8, 7, 6, in_channels=1)
    assert [c.reduction for c in model.cells] == [False, False, True, False, True, False]
    assert model.stem[0].in_channels == 1 and model.stem[0].out_channels == 24
    assert model.eval()(torch.randn(3, 1, 16, 16)).shape == (3, 7)


def test_drop_path_spares_identity_ops():
    g = nt.Genotype.from_cell([("skip_connect", 0), ("sep_conv_3x3", 1)])
    model = nt.NetworkCIFAR(g, 4, 10, 3)
    cell = model.cells[0]
    cell.train()
    s = torch.randn(2, 12, 8, 8)
    pre0 = cell.preprocess0(s)
    # drop probability ~1: the sep conv is dropped, the identity passes untouched
    torch.manual_seed(1)
    out = cell(s, s, drop_prob=1 - 1e-9)
    assert torch.allclose(out, pre0, atol=1e-5)
    out_kept = cell(s, s, drop_prob=0.0)
    assert not torch.allclose(out_kept, pre0, atol=1e-3)


def test_flops_counts_multiply_adds():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert nt.count_flops(conv, (3, 10, 10)) == 3 * 8 * 9 * 10 * 10
    model = nt.NetworkCIFAR(nt.GENOTYPES["DARTS_V2"], 36, 10, 20)
    # DARTS_V2 at the published size: about 0.53G multiply-adds on a 32x32 image
    assert 500e6 < nt.count_flops(model, (3, 32, 32)) < 560e6


def test_invalid_sizes_raise():
    with pytest.raises(ValueError, match="even"):
        nt.NetworkCIFAR(nt.GENOTYPES["DARTS_V2"], 7, 10, 8)
    with pytest.raises(ValueError, match="positive"):
        nt.NetworkCIFAR(nt.GENOTYPES["DARTS_V2"], 8, 10, 0)
