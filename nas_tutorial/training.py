"""Training and evaluation loops shared by every method.

SGD with momentum and a cosine learning-rate schedule, gradient clipping, the auxiliary
loss and the drop-path ramp, as in DARTS's ``train.py`` (Sec. A.2). Fast by design: data
from a :class:`~nas_tutorial.data.DeviceLoader`, bf16 autocast on CUDA, channels_last on
both devices (measured on 2 CPU threads for the quick networks: 1.2-1.4x faster training
steps and 2x faster evaluation than NCHW, ``benchmarks/bench_training.py``),
and no host sync inside an epoch (losses and accuracies accumulate on the device and are
read once per epoch). A NaN or Inf in the loss is found the same way: a device-side flag is
read once per epoch, and training stops with :class:`Diverged` (every search's loop does
the same).
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .config import TrainConfig, get_preset
from .data import DeviceLoader, ImageDataset, load
from .genotypes import resolve
from .network import NetworkCIFAR
from .progress import progress_bar  # noqa: F401  (training.progress_bar, as before)
from .devices import autocast, model_device, model_dtype, resolve_device  # noqa: F401


# Set to stop every training running in a thread at its next step (a pool of PNAS children
# on Ctrl-C or on a diverged sibling): a Python flag, so checking it costs no host sync.
STOP = threading.Event()


def run_threads(calls, workers: int) -> list:
    """Run ``calls`` (callables without arguments, each a training) in ``workers`` threads;
    their results in order. On Ctrl-C, or when one call raises, :data:`STOP` makes the
    trainings in flight stop at their next step instead of running to their end."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers)
    try:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]
    except BaseException:
        STOP.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        STOP.clear()


class Diverged(RuntimeError):
    """Training met a NaN or Inf and stopped; the last good checkpoint, where there is one,
    is kept. The message is one line: what diverged, the epoch, what was non-finite, the
    kept checkpoint and what to try. Attributes hold the parts (see :func:`diverged`)."""


def diverged(what: str, epoch: int, nonfinite: str, kept=None, hint: str = "a lower lr",
             cls=Diverged) -> Diverged:
    """The error a loop raises when its once-per-epoch check finds a NaN/Inf.

    ``what``: the run ("training", "supernet training", "PNAS child ..."); ``nonfinite``:
    what held it ("loss", "weights"); ``kept``: the last good checkpoint (None: none)."""
    where = (f"the last good checkpoint ({kept}) is kept" if kept is not None
             else "no checkpoint was kept")
    when = f" in epoch {epoch}" if epoch is not None else ""  # a fit has no epochs
    e = cls(f"{what} diverged{when}: NaN/Inf in the {nonfinite}; {where}; try {hint}")
    e.what, e.epoch, e.nonfinite, e.kept, e.hint = what, epoch, nonfinite, kept, hint
    return e


def nonfinite(loss_ok: torch.Tensor, model: nn.Module) -> str | None:
    """"loss", "weights" or None: one host sync for the flag ``loss_ok`` (accumulated on the
    device over an epoch, ``ok &= isfinite(loss)``) and every parameter of ``model``."""
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    weights_ok = torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool)
    loss_ok, weights_ok = torch.stack([loss_ok.to(weights_ok.device), weights_ok]).tolist()
    return None if loss_ok and weights_ok else ("loss" if not loss_ok else "weights")


@dataclass
class History:
    """Per-epoch curves of one training run; plots read this."""

    epoch: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    valid_loss: list = field(default_factory=list)
    valid_acc: list = field(default_factory=list)
    seconds: list = field(default_factory=list)  # wall time of the epoch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{k: list(v) for k, v in d.items() if k in cls.__dataclass_fields__})

    def __repr__(self) -> str:
        if not self.epoch:
            return "History(empty)"
        return (f"History({len(self.epoch)} epochs, last train acc {self.train_acc[-1]:.3f}, "
                f"valid acc {self.valid_acc[-1] if self.valid_acc else float('nan'):.3f})")


def _is_channels_last(model: nn.Module) -> bool:
    """Whether the model's conv weights are NHWC (then its inputs should be too)."""
    # A 1x1 or depthwise weight can be contiguous in both layouts; one that is NHWC only
    # decides.
    return any(p.dim() == 4 and not p.is_contiguous()
               and p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters())


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def evaluate(model: nn.Module, data, device="auto", batch_size: int = 512,
             amp: bool = True) -> tuple:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data`` (a dataset or loader).

    The device follows the model (:func:`~nas_tutorial.devices.model_device`): ``"auto"``
    evaluates where the model's weights are, a named device moves the model there first;
    the data goes to that device and the images to the model's dtype.
    """
    if len(data) == 0:
        raise ValueError("data holds no images: nothing to evaluate")
    device = model_device(model, device)
    dtype = model_dtype(model)
    loader = data if isinstance(data, DeviceLoader) else DeviceLoader(
        data.to(device), batch_size, train=False, channels_last=_is_channels_last(model))
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in loader:
        with autocast(device, amp):
            x, y = x.to(device, dtype), y.to(device)  # no-ops for a loader on the device
            logits = _logits(model(x))
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += y.numel()
    model.train(was_training)
    return loss_sum.item() / max(n, 1), correct.item() / max(n, 1)


def train(model: nn.Module, data, config: TrainConfig | None = None, valid=None,
          device="auto", progress: bool = True, callback=None) -> History:
    """Train ``model`` on ``data`` (an :class:`ImageDataset`, or a ``(train, valid)`` pair).

    ``callback(history)`` runs after every epoch (a live plot, a checkpoint). Returns the
    :class:`History`. The model is left on ``device`` in eval mode. A NaN/Inf in the loss or
    the weights raises :class:`Diverged` at the end of its epoch, before the callback: a
    checkpoint the callback wrote stays the last good one. The device follows the model, as
    in :func:`evaluate`: ``"auto"`` trains where the model's weights are, a named device
    moves the model there.

    Under torchrun (:func:`nas_tutorial.distributed.init` called) every process draws the
    same global batch of ``config.batch_size`` and trains on its shard through
    DistributedDataParallel, which averages the gradients: every process holds the same
    weights, and the history counts every image of the global batch. The progress bar shows
    on rank 0 only; the callback runs on every rank (write files in it on rank 0 only).
    """
    config = config or TrainConfig()
    if isinstance(data, tuple):
        data, valid = data
    if not isinstance(data, ImageDataset):
        raise TypeError("data must be an ImageDataset or a (train, valid) pair of them")
    if len(data) == 0 or (valid is not None and len(valid) == 0):
        raise ValueError(f"{'data' if len(data) == 0 else 'valid'} holds no images: nothing "
                         f"to train on or measure with")
    device = model_device(model, device)
    dtype = model_dtype(model)
    cuda = device.type == "cuda"
    distributed.check_batch(config.batch_size)
    # drop-path masks: each rank its own for its own images (rank 0: as one process)
    torch.manual_seed(distributed.rank_seed(config.seed))
    channels_last = config.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # The module the steps call: DDP averages the gradients during backward (and starts
    # every rank from rank 0's weights). Its loss is the mean over the rank's shard, so the
    # average over equal shards is the gradient of the mean over the global batch. BN
    # buffers are not broadcast every step: they are averaged once an epoch instead.
    forward = model
    if distributed.active():
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # newer torch calls the switch forward_sync_buffers (broadcast_buffers deprecated)
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
            DistributedDataParallel).parameters else "broadcast_buffers")
        forward = DistributedDataParallel(model, device_ids=[device] if cuda else None,
                                          **{no_sync: False})
    loader = DeviceLoader(data.to(device), config.batch_size, train=True, seed=config.seed,
                          cutout=config.cutout, channels_last=channels_last)
    valid_loader = (DeviceLoader(valid.to(device), 512, train=False,
                                 channels_last=channels_last) if valid is not None else None)
    steps = len(loader) if config.steps_per_epoch is None else min(len(loader),
                                                                  config.steps_per_epoch)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs,
                                                           eta_min=config.lr_min)
    history = History()
    bar = progress_bar(config.epochs * steps, "train", progress and distributed.is_main())
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        if hasattr(model, "drop_path_prob"):
            model.drop_path_prob = config.drop_path * epoch / config.epochs
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        finite = torch.ones((), device=device, dtype=torch.bool)
        seen = 0
        for step, (x, y) in enumerate(loader):
            if step == steps:
                break
            if STOP.is_set():
                bar.close()
                raise KeyboardInterrupt("stopped: a run beside this one was interrupted")
            x, y = distributed.shard(x, y)  # this rank's rows of the global batch
            x = x.to(dtype)  # a no-op for a float32 model
            with autocast(device, config.amp):
                out = forward(x)
                logits = _logits(out)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                if isinstance(out, tuple):
                    loss = loss + config.auxiliary_weight * F.cross_entropy(
                        out[1], y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            finite &= torch.isfinite(loss.detach())  # on the device: no sync per step
            loss_sum += loss.detach().float() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
            bar.update(1)
        if distributed.active():  # the whole global batch's numbers, one collective
            distributed.average_buffers(model)
            loss_sum, correct, bad, seen = distributed.all_reduce_sum(
                loss_sum, correct, (~finite).long(), torch.tensor(seen, device=device))
            finite, seen = bad == 0, int(seen)
        bad = nonfinite(finite, model)  # read with the epoch's other numbers
        if bad is not None:
            bar.close()
            raise diverged("training", epoch + 1, bad, hint=f"a lower lr than {config.lr:g}")
        history.epoch.append(epoch + 1)
        history.lr.append(scheduler.get_last_lr()[0])
        scheduler.step()
        history.train_loss.append(loss_sum.item() / max(seen, 1))
        history.train_acc.append(correct.item() / max(seen, 1))
        if valid_loader is not None:
            vl, va = evaluate(model, valid_loader, device, amp=config.amp)
            history.valid_loss.append(vl)
            history.valid_acc.append(va)
        history.seconds.append(time.perf_counter() - t0)
        bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}",
                        acc=f"{(history.valid_acc or history.train_acc)[-1]:.3f}")
        if callback is not None:
            callback(history)
    bar.close()
    model.eval()
    return history


def train_genotype(genotype, preset=None, epochs: int | None = None, device="auto",
                   progress: bool = True, callback=None, seed: int | None = None):
    """Build the evaluation network of ``genotype`` for ``preset`` and train it briefly.

    Returns ``(model, history)``; the history has train and test curves.
    """
    preset = preset if not isinstance(preset, (str, type(None))) else get_preset(preset, device)
    genotype = resolve(genotype)
    cfg = preset.train
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    device = resolve_device(device)
    train_ds = load(preset.dataset, train=True, size=preset.image_size, device=device,
                    n=preset.train_images)
    test_ds = load(preset.dataset, train=False, size=preset.image_size, device=device)
    torch.manual_seed(cfg.seed)
    model = NetworkCIFAR(genotype, preset.channels, train_ds.num_classes, preset.layers,
                         auxiliary=preset.auxiliary, in_channels=train_ds.shape[0])
    history = train(model, train_ds, cfg, valid=test_ds, device=device, progress=progress,
                    callback=callback)
    return model, history
