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


def test_factorized_reduce_is_the_official_two_convs():
    """The search's form, one grouped conv over the two stride-2 grids, is the official
    cat(conv_1(x), conv_2(x shifted)); evaluation networks keep the official form."""
    assert FactorizedReduce(6, 8).grouped is False
    torch.manual_seed(0)
    fr = FactorizedReduce(6, 8, affine=False).double()
    fr.grouped = True
    for size in (8, 7):
        x = torch.randn(2, 6, size, size, dtype=torch.float64)
        y = torch.relu(x)
        if size % 2:
            y = torch.nn.functional.pad(y, (0, 1, 0, 1))
        official = fr.bn(torch.cat([fr.conv_1(y), fr.conv_2(y[:, :, 1:, 1:])], dim=1))
        torch.testing.assert_close(fr(x), official, rtol=0, atol=1e-12)


def test_factorized_reduce_backward_in_nhwc_with_narrow_halves_is_safe():
    """torch 2.14.1's CPU conv backward corrupted the heap on a channel slice of an NHWC cat
    with 1-2 channels per half (the process aborts); the grouped conv never builds one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch\n"
        "from nas_tutorial.ops import FactorizedReduce\n"
        "torch.set_num_threads(1)\n"
        "for c in (2, 4):\n"
        "    fr = FactorizedReduce(c, c, affine=False).to(memory_format=torch.channels_last)\n"
        "    fr.grouped = True\n"
        "    for _ in range(50):\n"
        "        x = torch.randn(32, c, 8, 8).contiguous(memory_format=torch.channels_last)\n"
        "        fr(x.requires_grad_()).square().sum().backward()\n"
        "print('ok')\n")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "MALLOC_CHECK_": "3"},
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-300:]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (5, 1, 1), (3, 2, 1), (5, 2, 1),
                                               (3, 1, 2), (5, 1, 2), (5, 2, 2)])
@pytest.mark.parametrize("size", [7, 8, 16])
def test_depthwise_conv_backward_rewrites_are_exact(k, stride, dilation, size, channels_last):
    """DepthwiseConv2d's CPU backward (flipped-kernel input gradient, NHWC weight gradient,
    parity grids for dilation 2) gives torch's own gradients, in float64 to 1e-12."""
    from nas_tutorial.fast.convs import DepthwiseConv2d

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    pad = dilation * (k - 1) // 2
    conv = DepthwiseConv2d(4, k, stride, pad, dilation).double().to(memory_format=fmt)
    ref = torch.nn.Conv2d(4, 4, k, stride, pad, dilation, groups=4, bias=False).double()
    ref.weight.data.copy_(conv.weight.data)
    x = torch.randn(3, 4, size, size, dtype=torch.float64).contiguous(memory_format=fmt)
    x.requires_grad_()
    y = conv(x)
    torch.testing.assert_close(y, ref(x), rtol=0, atol=0)
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, [x, conv.weight], g)
    theirs = torch.autograd.grad(ref(x), [x, ref.weight], g)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_depthwise_conv_takes_the_rewrites(monkeypatch):
    """Stride 1: no native input-gradient kernel; dilation 2 at 16 px: the weight gradient
    over the four parity grids (a batch of 4B half-size images)."""
    from nas_tutorial.fast import convs as depthwise

    seen = []
    native = depthwise._native

    def spy(grad, x, weight, conf, mask):
        seen.append((tuple(x.shape), conf, mask))
        return native(grad, x, weight, conf, mask)

    monkeypatch.setattr(depthwise, "_native", spy)
    conv = depthwise.DepthwiseConv2d(4, 5, 1, 4, 2)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    conv(x).sum().backward()
    assert seen == [((8, 4, 8, 8), (1, 2, 1), (False, True))]
    seen.clear()
    depthwise.DepthwiseConv2d(4, 3, 1, 1, 1)(x).sum().backward()
    assert seen == [((2, 4, 16, 16), (1, 1, 1), (False, True))]
    assert x.grad is not None


def test_depthwise_conv_under_cpu_autocast_matches_torch():
    from nas_tutorial.fast.convs import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(4, 5, 1, 4, 2)
    ref = torch.nn.Conv2d(4, 4, 5, 1, 4, 2, groups=4, bias=False)
    ref.weight.data.copy_(conv.weight.data)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = conv(x), ref(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_ref)
    ours = torch.autograd.grad(y.float().sum(), [x, conv.weight])
    theirs = torch.autograd.grad(y_ref.float().sum(), [x, ref.weight])
    for a, b in zip(ours, theirs):  # bf16 sums in another order: close as a whole
        assert a.dtype == b.dtype == torch.float32
        assert float((a - b).norm() / b.norm()) < 2e-2


def test_fast_backward_only_in_the_search_supernet():
    """Evaluation networks (whose trainings the tables recorded) and the plain supernet keep
    torch's kernels; the search's (fast) mixed ops get the rewrites, with the same
    parameters."""
    from nas_tutorial import pc_darts
    from nas_tutorial.fast import pc_darts as fast_pc_darts
    from nas_tutorial.fast.convs import DepthwiseConv2d, fast_backward

    plain = OPS["sep_conv_5x5"](4, 1, True)
    assert not any(isinstance(m, DepthwiseConv2d) for m in plain.modules())
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    fast = fast_backward(plain)
    assert sum(isinstance(m, DepthwiseConv2d) for m in fast.modules()) == 2
    assert all(torch.equal(v, state[k]) for k, v in fast.state_dict().items())
    assert not any(isinstance(m, DepthwiseConv2d) for m in pc_darts.MixedOp(4, 2).modules())
    mixed = fast_pc_darts.FastMixedOp(4, 2)
    assert sum(isinstance(m, DepthwiseConv2d) for m in mixed.modules()) == 6
    assert all(m.grouped for m in mixed.modules() if isinstance(m, FactorizedReduce))


@pytest.mark.parametrize("k,pad,stride,dilation", [(2, 1, 1, 2), (4, 3, 1, 2), ((3, 5), (1, 2), 1, 1)])
def test_depthwise_conv_odd_settings_fall_back_exactly(k, pad, stride, dilation):
    """Even kernels with dilation 2 (odd padding) and non-square settings: torch's result."""
    from nas_tutorial.fast.convs import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(3, k, stride, pad, dilation).double()
    ref = torch.nn.Conv2d(3, 3, k, stride, pad, dilation, groups=3, bias=False).double()
    ref.weight.data.copy_(conv.weight.data)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    assert y.shape == ref(x).shape
    ours = torch.autograd.grad(y.square().sum(), [x, conv.weight])
    theirs = torch.autograd.grad(ref(x).square().sum(), [x, ref.weight])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
