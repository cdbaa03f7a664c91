"""Devices and dtypes as users write them (`auto`, `cpu`, `cuda`, `cuda:1`), checked once at the edge.

`auto` means cuda when torch sees a GPU, else cpu; dtype `auto` means bfloat16 on cuda and float32
on cpu. Anything else is a one-line UserError instead of torch's traceback. torch is imported only
when the answer depends on it (cuda, or auto on a machine with an NVIDIA driver), so on a machine
without a GPU a run validates, and fails its preflight, without loading torch.
"""

from __future__ import annotations

import contextlib
import re

from lmmsae.errors import UserError

DTYPES = ("float32", "float16", "bfloat16")
_CUDA = re.compile(r"cuda(?::(\d+))?")
_OTHER = re.compile(r"(mps|meta|(xpu|npu|hpu)(:\d+)?)")


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' or 'cpu'; checks that a cuda device exists here."""
    name = str(name).strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "auto":
        if not nvidia_driver_present():  # no GPU here: no need to import torch to know
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    m = _CUDA.fullmatch(name)
    if not m:
        if _OTHER.fullmatch(name):
            return name  # devices torch knows that lmmsae does not check (mps, xpu, ...)
        raise UserError(f"device {name!r} is not known: use cpu, cuda, cuda:N or auto")
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"device {name!r} is not available here (torch sees no CUDA GPU): use --device cpu "
                        f"or --device auto")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise UserError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return name


def nvidia_driver_present() -> bool:
    """Whether this machine shows an NVIDIA GPU driver (Linux's /proc or /dev entries), asked without torch."""
    from pathlib import Path

    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or any(Path("/dev").glob("nvidia[0-9]*"))


def resolve_dtype(name: str, device: str) -> str:
    """'auto' -> bfloat16 on cuda, float32 on cpu."""
    from lmmsae.errors import did_you_mean

    name = str(name).strip().lower()
    if name == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if name not in DTYPES:
        raise UserError(f"dtype {name!r} is not supported.{did_you_mean(name, DTYPES)} Use auto or one of "
                        f"{', '.join(DTYPES)}")
    return name


class OutOfMemory(UserError):
    """A forward pass ran out of accelerator memory; says what to lower."""


@contextlib.contextmanager
def out_of_memory_hint(what: str, n_samples: int, n_tokens: int, device):
    """Turn torch.cuda.OutOfMemoryError into one line naming the batch-size options to lower."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise OutOfMemory(
            f"out of GPU memory on {device} in {what} of {n_samples} samples ({n_tokens} tokens): lower the "
            f"batch size of the running stage (-o collect.batch_size, -o cache.batch_size, "
            f"-o train.model_batch_size, -o steer.batch_size), or spread the model over GPUs with "
            f"-o model.device_map=auto") from None
