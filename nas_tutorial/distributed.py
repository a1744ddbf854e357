"""Data parallelism over several processes with PyTorch's own engine: ``torchrun`` and
``torch.distributed`` (NCCL between GPUs, gloo between CPUs).

``torchrun --nproc_per_node=N -m nas_tutorial.run.cli ...`` starts N copies of the same
command; each reads its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and :func:`init` joins them into one
process group. Without torchrun nothing here does anything: the world has one process,
no process group exists and every function below is the identity, so a single-process run
computes exactly what it computed before this module existed.

The scheme, the same for every method (Goyal et al. 2017, "Accurate, Large Minibatch SGD",
Sec. 2-3: the global batch and the lr are those of one process):

- every rank builds the same loader with the same seed, so every rank draws the same global
  batch, augmentation included, and keeps its own contiguous slice of it (:func:`shard`):
  deterministic, no sampler, and a resumed loader state is the same on every rank;
- each rank's loss is the mean over its shard; averaging the gradients over the ranks
  (DDP for ``train``, :func:`all_reduce_grads` for the searches) then gives the gradient of
  the mean loss over the global batch, so every rank takes the same optimizer step and the
  weights, alpha and beta stay identical everywhere;
- BatchNorm normalizes each shard with that shard's own statistics, as DDP does by default
  and as the official multi-GPU PC-DARTS code did: a run on W processes therefore equals one
  process that runs the W shards of each batch one after another and averages their
  gradients, not one process with the whole batch in one BN call (SyncBatchNorm would; it
  costs a collective per BN layer). The running statistics are averaged over the ranks once
  an epoch (:func:`average_buffers`): the running mean is then exactly that of the global
  batch, the running variance misses the spread between shard means;
- only rank 0 writes files and shows progress bars (:func:`is_main`).

Failure: a rank that raises exits non-zero, and torchrun then stops the other ranks of the
group (a rank waiting in a collective does not wait forever). Inputs and run folders are
checked on every rank before the first collective, so a bad flag fails on all of them at
once with the same one-line message.
"""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

from .checkpoints import RunFolderError
from .devices import resolve_device


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting the same
    variables) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


# Set while this process computes something on its own inside a distributed run (a PNAS
# child, rank 0's evolution after the SPOS supernet): the loops then take no shard and
# average nothing, as in a single process.
_ALONE = [0]


def active() -> bool:
    """Whether a process group of more than one process is running (and this process is
    not inside :func:`alone`)."""
    return (not _ALONE[0] and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


@contextlib.contextmanager
def alone():
    """Inside, this process computes by itself: world size 1, rank 0, no collectives. For
    work one rank does alone (its share of PNAS children, rank 0's search and retraining
    after the data-parallel part), which must not wait for the others."""
    _ALONE[0] += 1
    try:
        yield
    finally:
        _ALONE[0] -= 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0, the only process that writes files and prints progress (always True
    without torchrun). Inside :func:`alone` it is still this process's real rank."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def rank_seed(seed: int) -> int:
    """The seed of this rank's own random draws (dropout and drop-path masks): each rank
    masks its own images differently; rank 0 keeps ``seed``, so a single process draws
    what it always drew."""
    return seed + 7919 * rank()


def init(device="auto", timeout_s: float = 1800.0) -> torch.device:
    """Join the process group torchrun described in the environment; returns this rank's
    device. ``device``: ``auto`` or ``cuda`` gives ``cuda:LOCAL_RANK`` with NCCL when CUDA is
    here, the CPU with gloo otherwise (``cpu``: gloo even on a GPU machine). Without
    torchrun (``WORLD_SIZE`` unset or 1): no group, ``device`` resolved as usual."""
    device = resolve_device(device)
    if not launched():
        return device
    if device.type == "cuda":
        # One GPU per process: LOCAL_RANK is the process's index on its own machine.
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return device


def shutdown() -> None:
    """Leave the process group (at the end of a run; harmless without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, what: str = "batch_size") -> None:
    """A global batch must split into equal shards: with unequal ones the average of the
    ranks' mean losses is not the mean loss over the batch."""
    w = world_size()
    if batch_size % w:
        raise ValueError(f"{what}={batch_size} does not split over {w} processes: choose a "
                         f"multiple of {w} (the batch is global, each process takes "
                         f"{what}/{w} of it)")


def shard(*tensors):
    """This rank's contiguous slice of each of ``tensors`` (a global batch, first axis):
    rank r of W keeps rows [r*B/W, (r+1)*B/W). Identity without torchrun."""
    w = world_size()
    if w == 1:
        return tensors if len(tensors) > 1 else tensors[0]
    n = tensors[0].size(0)
    if n % w:
        raise ValueError(f"a batch of {n} does not split over {w} processes")
    r, b = rank(), n // w
    out = tuple(t[r * b:(r + 1) * b] for t in tensors)
    return out if len(out) > 1 else out[0]


def all_reduce_grads(params) -> None:
    """Average the gradients of ``params`` over the ranks, in one collective (a flat
    buffer). Parameters without a gradient are skipped: SPOS's unsampled blocks have none on
    any rank, because every rank trains the same path, so they stay untouched."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        for g, avg in zip(grads, all_reduce_mean(grads)):
            g.copy_(avg)


def all_reduce_mean(tensors: list) -> list:
    """The mean over the ranks of each tensor of ``tensors`` (new tensors, same shapes);
    the list itself without torchrun."""
    if not active() or not tensors:
        return list(tensors)
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view(t.shape).to(t.dtype))
        start += t.numel()
    return out


def all_reduce_sum(*values: torch.Tensor) -> list:
    """Sums over the ranks of scalar tensors (an epoch's loss sum, correct count, finite
    flag), read in one collective; as given without torchrun."""
    if not active():
        return list(values)
    flat = torch.stack([v.detach().double() for v in values])
    dist.all_reduce(flat)
    return [f.to(v.dtype) for f, v in zip(flat, values)]


@torch.no_grad()
def average_buffers(module: torch.nn.Module) -> None:
    """Average the floating-point buffers (BN running mean and variance) over the ranks, so
    every rank evaluates, checkpoints and continues with the same statistics."""
    if not active():
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    for b, avg in zip(buffers, all_reduce_mean(buffers)):
        b.copy_(avg)


@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (what DDP does when it wraps a
    model): the same start even where a seeded initialization could differ."""
    if not active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def spread(fn, items: list) -> list:
    """``fn(items)`` computed with the items spread over the ranks: rank r computes items
    r, r+W, r+2W, ...; the results are gathered and every rank returns all of them, in the
    order of ``items`` (``fn`` must return one picklable result per item). An exception on
    one rank (a diverged PNAS child) is raised on every rank, the first rank's first."""
    w = world_size()
    if w == 1:
        return list(fn(items))
    mine = items[rank()::w]
    try:
        with alone():  # each item is computed whole by one rank
            results = list(fn(mine)) if mine else []
    except Exception as e:  # raised on every rank below, so no rank waits for this one
        results = e
    gathered = [None] * w
    dist.all_gather_object(gathered, results)
    for part in gathered:
        if isinstance(part, Exception):
            raise part
    out = [None] * len(items)
    for r, part in enumerate(gathered):
        out[r::w] = part
    return out


def gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without torchrun)."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj=None):
    """Rank 0's ``obj`` on every rank (a decision rank 0 alone made)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here (no-op without torchrun)."""
    if active():
        dist.barrier()


def check_world(saved: int | None, where) -> None:
    """Refuse to resume, on this many processes, a run checkpointed on another number:
    with per-process BN statistics the numbers depend on it, and a resumed run must compute
    what the uninterrupted one would have."""
    saved = 1 if saved is None else int(saved)
    if saved != world_size():
        how = ("without torchrun" if saved == 1
               else f"with torchrun and {saved} processes in all (--nnodes x --nproc_per_node)")
        raise RunFolderError(f"{where} was run on {saved} process(es), this is "
                             f"{world_size()}; resume it {how} (BatchNorm statistics are "
                             f"per process, so the numbers depend on the count)")
