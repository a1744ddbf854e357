"""The CUDA path: each search's step with bf16 autocast and its memory layout, the unrolled
step in real fp32, the device rule of evaluate/train, a PNAS child and a SPOS path.

Marked ``cuda``: skipped on a machine without a GPU. ``NAS_TUTORIAL_TEST_DEVICE=cpu`` runs
them on the CPU instead (``make gpu-check DRY=1`` does, and a unit test runs that), so the
tests themselves are exercised in CI; the assertions that only hold on CUDA (bf16
activations, NHWC, TF32) are checked where the device is CUDA.
"""
import copy
from dataclasses import replace

import pytest
import torch

import nas_tutorial as nt
from nas_tutorial import pc_darts as pc
from nas_tutorial import pnas, spos

pytestmark = pytest.mark.cuda


@pytest.fixture
def conv_dtypes():
    """The dtypes of every Conv2d output while the test runs (bf16 under CUDA autocast)."""
    seen = set()

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and torch.is_tensor(output):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield seen
    handle.remove()


def _search_config(**kw):
    base = dict(dataset="digits", image_size=8, C=4, layers=3, steps=2, multiplier=2, k=2,
                epochs=2, batch_size=32, steps_per_epoch=2, warmup_epochs=0, lr=0.05,
                arch_lr=3e-3)
    base.update(kw)
    return pc.SearchConfig(**base)


@pytest.mark.parametrize("method, k", [("pc-darts", 2), ("darts", 1)])
def test_a_search_steps_on_the_device_with_bf16_autocast(test_device, conv_dtypes, method, k):
    cfg = _search_config(method=method, k=k, edge_norm=k > 1)
    torch.manual_seed(0)
    result = pc.search(cfg, device=test_device, progress=False)
    net = result.network
    assert next(net.parameters()).device.type == test_device.type
    assert all(p.dtype == torch.float32 for p in net.parameters())  # master weights fp32
    assert all(torch.isfinite(a).all() for a in net.arch_parameters())
    assert any((a != 0).any() for a in net.arch_parameters())  # the architecture moved
    if test_device.type == "cuda":
        assert torch.bfloat16 in conv_dtypes
        conv = next(p for p in net.weight_parameters()  # one NHWC can tell from NCHW
                    if p.dim() == 4 and p.shape[-1] > 1 and p.shape[1] > 1)
        assert conv.is_contiguous(memory_format=torch.channels_last)  # NHWC on CUDA


def test_the_unrolled_step_is_real_fp32_on_the_device(test_device, monkeypatch):
    """Against float64 on the same device: cosine >= 0.999 (measured on an H200 at the
    paper's size: 0.9586 with TF32 on, 0.9990 off), with TF32 off inside, restored after."""
    inside = []
    loss = pc._loss_fp32

    def spy(*args):
        inside.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return loss(*args)

    monkeypatch.setattr(pc, "_loss_fp32", spy)
    cfg = _search_config(C=8, layers=3, steps=4, multiplier=4, k=4, unrolled=True)
    torch.manual_seed(0)
    net = pc.SearchNetwork(8, 10, 3, k=4, steps=4, multiplier=4, in_channels=3).to(test_device)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 1e-3)
    net64 = copy.deepcopy(net).double()
    xt, xv = (torch.randn(16, 3, 8, 8, device=test_device) for _ in range(2))
    yt, yv = (torch.randint(0, 10, (16,), device=test_device) for _ in range(2))
    g64, _ = pc.Architect(net64, cfg, test_device).unrolled_grads(
        xt.double(), yt, xv.double(), yv, 0.1)
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with nt.devices.autocast(test_device):
            g, _ = pc.Architect(net, cfg, test_device).unrolled_grads(xt, yt, xv, yv, 0.1)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert inside and set(inside[-4:]) == {(False, False)}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    a, b = (torch.cat([t.flatten().double() for t in x]) for x in (g, g64))
    assert float(a @ b / a.norm() / b.norm()) >= 0.999


def test_evaluate_and_train_follow_the_model(test_device):
    train, test = nt.data.load("digits"), nt.data.load("digits", train=False)
    torch.manual_seed(0)
    model = nt.NetworkCIFAR(nt.GENOTYPES["DARTS_V2"], 4, 10, 3, in_channels=1)
    _, on_cpu = nt.evaluate(model, test, amp=False)  # "auto": where the model is (the CPU)
    assert next(model.parameters()).device.type == "cpu"
    _, moved = nt.evaluate(model, test, device=test_device, amp=False)  # named: it moves
    assert next(model.parameters()).device.type == test_device.type
    assert moved == pytest.approx(on_cpu, abs=2 / len(test))
    cfg = nt.TrainConfig(epochs=1, batch_size=32, lr=0.05, drop_path=0.0, cutout=0,
                         steps_per_epoch=3)
    nt.train(model, train.to(test_device), cfg, progress=False)  # "auto" again: the model's
    assert next(model.parameters()).device.type == test_device.type
    nt.evaluate(model, test)  # data on the CPU, model on the device


def test_a_pnas_child_trains_on_the_device(test_device):
    cfg = pnas.get_config("quick", train=replace(pnas.get_config("quick").train, epochs=1))
    trainer = pnas.ChildTrainer(cfg, test_device, workers=2)
    cells = pnas.one_block_cells(cfg.ops)[:2]
    accs = trainer(cells)
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert trainer.train_set.images.device.type == test_device.type


def test_a_spos_path_trains_and_is_scored_on_the_device(test_device, conv_dtypes):
    config = replace(spos.QUICK, name="tiny", stage_repeats=(1, 2, 1),
                     stage_channels=(16, 24, 32), stem_channels=8, last_channels=32,
                     image_size=8)
    cfg = replace(spos.PRESETS["quick"], supernet=config, epochs=1, batch_size=16, lr=0.05,
                  recal_batches=2, recal_batch_size=16)
    data = nt.data.synthetic(64, (config.in_channels, 8, 8), seed=0)
    torch.manual_seed(0)
    net = spos.Supernet(config)
    spos.train_supernet(net, data, cfg, test_device, progress=False)
    assert next(net.parameters()).device.type == test_device.type
    ev = spos.PathEvaluator(net, data, data, recal_batches=2, recal_batch_size=16)
    path = spos.random_path(config, __import__("random").Random(0))
    assert 0.0 <= ev(path) <= 1.0
    if test_device.type == "cuda":
        assert torch.bfloat16 in conv_dtypes
