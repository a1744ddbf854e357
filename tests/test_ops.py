"""Every op in the registry: shapes at stride 1 and 2, gradients, op-set membership."""
import pytest
import torch

import nas_tutorial as nt
from nas_tutorial.ops import OPS, FactorizedReduce, Identity, Zero


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_op_shape_and_gradient(name, stride):
    C = 8
    op = OPS[name](C, stride, True)
    x = torch.randn(2, C, 12, 12, requires_grad=True)
    y = op(x)
    assert y.shape == (2, C, 12 // stride, 12 // stride)
    y.square().sum().backward()
    if name != "none":  # the zero op is the only one that passes no gradient
        assert x.grad is not None and x.grad.abs().sum() > 0
    for p in op.parameters():
        assert p.grad is not None


def test_op_sets_are_in_registry_and_ordered_as_papers():
    assert nt.DARTS_OPS == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                            "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
    assert len(nt.PNAS_OPS) == 8 and set(nt.PNAS_OPS) <= set(OPS)
    assert set(nt.DARTS_OPS) <= set(OPS)


def test_skip_is_identity_at_stride_1_and_factorized_reduce_at_2():
    assert isinstance(OPS["skip_connect"](4, 1, True), Identity)
    assert isinstance(OPS["identity"](4, 2, True), FactorizedReduce)
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(OPS["skip_connect"](4, 1, True)(x), x)


def test_none_is_exactly_zero():
    assert isinstance(OPS["none"](4, 2, False), Zero)
    assert OPS["none"](4, 2, False)(torch.randn(2, 4, 8, 8)).abs().sum() == 0


def test_sep_conv_is_two_separable_convs_with_one_stride():
    """DARTS operations.py: (ReLU, dw kxk, 1x1, BN) x2, only the first strided."""
    op = OPS["sep_conv_5x5"](6, 2, False)
    convs = [m for m in op.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5), (1, 1), (5, 5), (1, 1)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert convs[0].groups == 6 and convs[2].groups == 6
    bns = [m for m in op.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 2 and not bns[0].affine


def test_dil_conv_dilation_and_padding():
    conv = [m for m in OPS["dil_conv_5x5"](4, 1, True).modules()
            if isinstance(m, torch.nn.Conv2d)][0]
    assert conv.dilation == (2, 2) and conv.padding == (4, 4)


def test_factorized_reduce_handles_odd_sizes():
    assert FactorizedReduce(4, 8)(torch.randn(1, 4, 7, 7)).shape == (1, 8, 4, 4)
