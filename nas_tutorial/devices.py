"""Where a computation runs, and what made a recorded number: one module for the device.

- :func:`resolve_device`: ``"auto"`` is CUDA when there is one, else the CPU;
  :func:`model_device`: the rule for every function that takes a model, *the device
  follows the model* (``"auto"`` means where the model's weights are; a named device moves
  the model there);
- :func:`autocast`: bf16 autocast on CUDA, nothing elsewhere; :func:`full_fp32`: TF32
  off for convolutions and matmuls inside a block that must be real fp32 (DARTS's unrolled
  step), the previous setting restored after it;
- :func:`device_label` (a human label) and :func:`machine` (what decides the last bits of
  a float result: the CPU model and instruction set, oneDNN's cap, the thread count, the
  torch build; or the GPU and its CUDA/cuDNN). Recorded tables and runs carry
  :func:`machine`'s ``fingerprint``: a recorded number is compared bit for bit only where
  the fingerprint is the same (:func:`same_machine`), within its seed noise elsewhere.
  Float results differ between CPU models (vector width, oneDNN kernels, native bf16 or
  not), so "the same torch on some x86 CPU" does not mean "the same bits".

Importing this module does nothing (no device query, no seeding).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from functools import lru_cache

import torch

# CPU flags that pick different float kernels (vector width, FMA, native bf16/AMX).
_KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni",
                 "amx_bf16", "amx_tile", "amx_int8", "asimd", "sve", "sve2")


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` (or None): CUDA where there is one, else the CPU; anything else as named."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model, device="auto") -> torch.device:
    """The device a function that takes ``model`` runs on: the model's own (where its first
    parameter or buffer lives) for ``"auto"``, the default device for a model without any;
    a named device moves the model there (in place, as ``model.to`` does)."""
    if device in (None, "auto"):
        for t in _tensors(model):
            return t.device
        device = resolve_device("auto")
    device = torch.device(device)
    if any(t.device != device for t in _tensors(model)):
        model.to(device)
    return device


def model_dtype(model) -> torch.dtype:
    """The floating dtype of the model's weights (float32 for a model without any)."""
    for t in _tensors(model):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _tensors(model):
    yield from model.parameters()
    yield from model.buffers()


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (BN stays fp32 under autocast); a no-op elsewhere."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def full_fp32():
    """Real fp32 inside the block: autocast off and TF32 off for cuDNN convolutions and
    CUDA matmuls (on since Ampere by torch's default for convolutions; measured on an H200,
    DARTS's second-order gradient against float64 had cosine 0.9586 with TF32 and 0.9990
    without). The previous flags come back afterwards, also on an exception."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():  # torch warns about a CUDA autocast without CUDA
                stack.enter_context(torch.autocast("cuda", enabled=False))
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


def device_label(device="auto") -> str:
    """A human label such as ``NVIDIA H200`` or ``CPU x86_64, 2 threads``."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"CPU {platform.machine()}, {n} thread{'s' if n != 1 else ''}"


@lru_cache(maxsize=1)
def _cpu() -> tuple:
    """The CPU's model name and the kernel-relevant flags it reports (Linux /proc/cpuinfo;
    elsewhere the platform's processor string and no flags)."""
    name, flags = platform.processor() or platform.machine(), ()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and name in (
                        platform.processor(), platform.machine(), ""):
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    have = set(value.split())
                    flags = tuple(f for f in _KERNEL_FLAGS if f in have)
    except OSError:
        pass
    return name, flags


def machine(device="cpu", threads: int | None = None) -> dict:
    """What decides the last bits of a float result on ``device``, and its ``fingerprint``
    (12 hex digits of a hash of the rest). On the CPU: model name, kernel flags, ATen's CPU
    capability (``ATEN_CPU_CAPABILITY`` caps it), oneDNN's ISA cap
    (``ONEDNN_MAX_CPU_ISA``), torch's thread count and build; on CUDA: the GPU, its compute
    capability, CUDA, cuDNN and torch. ``threads``: the thread count to record (default:
    torch's now)."""
    device = resolve_device(device)
    info = {"torch": torch.__version__, "torch_git": (torch.version.git_version or "")[:10]}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device),
                    capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        name, flags = _cpu()
        capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
        info.update(cpu=name, flags=" ".join(flags), capability=capability,
                    onednn_isa=os.environ.get("ONEDNN_MAX_CPU_ISA",
                                              os.environ.get("DNNL_MAX_CPU_ISA", "")),
                    threads=threads or torch.get_num_threads())
    blob = json.dumps(info, sort_keys=True).encode()
    return {"fingerprint": hashlib.sha1(blob).hexdigest()[:12], **info}


def same_machine(recorded, device="cpu") -> bool:
    """Whether a number recorded with fingerprint ``recorded`` (a string, a
    :func:`machine` dict, or a header holding ``machine``) can be compared bit for bit
    here. Unknown (None, an old record without one) is never the same."""
    if isinstance(recorded, dict):
        recorded = recorded.get("fingerprint", (recorded.get("machine") or {}).get(
            "fingerprint") if isinstance(recorded.get("machine"), dict) else None)
    return recorded is not None and recorded == machine(device)["fingerprint"]


def set_threads(n: int | None = 1) -> int:
    """Torch's CPU intra-op threads, one rule for the notebooks and the CLI: the networks
    here are tiny, and on a small CPU one thread per training is the fastest (measured on 2
    cores: 12 s an epoch of notebook 00 with one thread, 155 s with two on a busy machine);
    ``None`` keeps torch's default."""
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


@contextlib.contextmanager
def threads(n: int | None):
    """Torch's CPU threads set to ``n`` inside the block (None: as they are), restored
    after, even on Ctrl-C: a search or a table sets its own without changing the caller's."""
    old = torch.get_num_threads()
    set_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


__all__ = ["resolve_device", "model_device", "model_dtype", "autocast", "full_fp32",
           "device_label", "machine", "same_machine", "set_threads", "threads"]
