"""The shared training loop: it learns, it is repeatable, it keeps a history."""
from dataclasses import replace

import pytest
import torch

import nas_tutorial as nt

TINY = nt.TrainConfig(epochs=2, batch_size=32, lr=0.05, drop_path=0.1, cutout=0,
                      steps_per_epoch=6, seed=3)


def _tiny_model():
    return nt.NetworkCIFAR(nt.GENOTYPES["DARTS_V2"], 4, 10, 3, in_channels=1)


def test_train_records_history_and_learns_digits():
    train, test = nt.data.load("digits"), nt.data.load("digits", train=False)
    model = _tiny_model()
    _, acc_before = nt.evaluate(model, test)
    history = nt.train(model, (train, test), replace(TINY, epochs=3, steps_per_epoch=None),
                       progress=False)
    assert history.epoch == [1, 2, 3] and len(history.valid_acc) == 3
    assert history.lr[0] > history.lr[-1]  # cosine schedule
    assert history.valid_acc[-1] > max(0.5, acc_before + 0.2)


def test_same_seed_same_run_on_cpu():
    data = nt.data.load("digits")
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = _tiny_model()
        h = nt.train(model, data, TINY, progress=False)
        runs.append((h.train_loss, model.classifier.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_callback_runs_every_epoch_and_auxiliary_loss_is_used():
    data = nt.data.synthetic(96, (3, 32, 32))
    model = nt.NetworkCIFAR(nt.GENOTYPES["PC_DARTS"], 4, 10, 3, auxiliary=True)
    seen = []
    nt.train(model, data, replace(TINY, auxiliary_weight=0.4), progress=False,
             callback=lambda h: seen.append(len(h.epoch)))
    assert seen == [1, 2]
    assert model.auxiliary_head.classifier.weight.grad is not None


def test_drop_path_is_ramped_per_epoch():
    data = nt.data.load("digits")
    model = _tiny_model()
    probs = []
    nt.train(model, data, replace(TINY, epochs=3, drop_path=0.3), progress=False,
             callback=lambda h: probs.append(model.drop_path_prob))
    assert [round(p, 6) for p in probs] == [0.0, 0.1, 0.2]


@pytest.mark.fashion
def test_presets():
    quick = nt.get_preset("quick")
    assert (quick.dataset, quick.image_size, quick.train_images) == ("fashion_mnist", 16, 5000)
    full = nt.get_preset("full")
    assert (full.channels, full.layers, full.train.epochs, full.train.batch_size) == (36, 20, 600, 96)


def test_a_nan_loss_stops_training_with_one_line():
    """A huge lr makes the loss NaN/Inf: training stops at the end of that epoch with
    Diverged (one line: epoch, what, what to try) instead of returning a chance-level model."""
    data = nt.data.load("digits")
    seen = []
    with pytest.raises(nt.training.Diverged) as caught:
        nt.train(_tiny_model(), data, replace(TINY, lr=1e12, grad_clip=1e30), progress=False,
                 callback=lambda h: seen.append(len(h.epoch)))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("training diverged in epoch 1: NaN/Inf")
    assert "try a lower lr than 1e+12" in message and caught.value.epoch == 1
    assert seen == []  # the callback (a checkpoint) never sees the diverged epoch


def test_the_nan_check_reads_the_flag_once_per_epoch(monkeypatch):
    """The finite check adds no host sync per step: the loop's device flag is read by
    nonfinite() once an epoch, and a finite run passes it."""
    calls = []
    check = nt.training.nonfinite
    monkeypatch.setattr(nt.training, "nonfinite", lambda *a: calls.append(1) or check(*a))
    nt.train(_tiny_model(), nt.data.load("digits"), TINY, progress=False)
    assert len(calls) == TINY.epochs
    model = _tiny_model()
    assert check(torch.tensor(False), model) == "loss"
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    assert check(torch.tensor(True), model) == "weights"


def test_stop_flag_ends_a_training_at_its_next_step():
    from nas_tutorial import training

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    before = [p.detach().clone() for p in model.parameters()]
    data = nt.data.load("digits")
    training.STOP.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            nt.train(model, data, nt.TrainConfig(epochs=1, batch_size=32), device="cpu",
                     progress=False)
    finally:
        training.STOP.clear()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no step taken


def test_run_threads_stops_the_others_when_one_fails():
    """One training raising (Ctrl-C, divergence) stops those in flight at their next step:
    they see training.STOP, and it is cleared afterwards."""
    import time

    from nas_tutorial import training

    seen = []

    def fails():
        time.sleep(0.1)
        raise ValueError("boom")

    def long_training():
        t0 = time.perf_counter()
        while not training.STOP.is_set() and time.perf_counter() - t0 < 30:
            time.sleep(0.01)
        seen.append(time.perf_counter() - t0)

    assert training.run_threads([lambda: 1, lambda: 2], 2) == [1, 2]
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="boom"):
        training.run_threads([fails, long_training], 2)
    assert time.perf_counter() - t0 < 5 and seen and seen[0] < 5
    assert not training.STOP.is_set()


def test_the_device_follows_the_model():
    """One rule for every function that takes a model: "auto" is where the model's weights
    are (never the machine's default: a CPU-built model on a GPU machine stays on the CPU),
    a named device moves the model there, a model without weights gets the default."""
    from nas_tutorial.devices import model_device, resolve_device

    on_meta = torch.nn.Linear(2, 2, device="meta")
    assert model_device(on_meta) == torch.device("meta")
    cpu_model = torch.nn.Linear(2, 2)
    assert model_device(cpu_model, "meta") == torch.device("meta")
    assert cpu_model.weight.device.type == "meta"  # moved, as the docstring says
    assert model_device(torch.nn.ReLU()) == resolve_device("auto")


def test_evaluate_and_train_take_a_model_of_another_dtype():
    """The images follow the model's dtype too: a float64 model evaluates and trains on the
    float32 data, and gives the float32 model's accuracy."""
    test = nt.data.load("digits", train=False)
    torch.manual_seed(0)
    model = _tiny_model().eval()
    double = _tiny_model().double()
    double.load_state_dict(model.state_dict())
    loss32, acc32 = nt.evaluate(model, test)
    loss64, acc64 = nt.evaluate(double, test)
    assert acc64 == pytest.approx(acc32, abs=2 / len(test)) and loss64 == pytest.approx(loss32, rel=1e-4)
    history = nt.train(double, nt.data.load("digits"), TINY, progress=False)
    assert next(double.parameters()).dtype == torch.float64 and len(history.epoch) == 2
