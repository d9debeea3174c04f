"""What every command that runs a model shares: the device, the numeric precision, the seeds.

`train.device` and `train.precision` mean what `evaluate.device` and `generate.precision` mean: each
command passes the key it read the setting from, so that an error names that key.

Precision auto = bf16 autocast (fp32 master weights) on CUDA GPUs with bf16 and on CPUs with native bf16
matmuls (AVX512-BF16 or AMX), fp16 autocast + GradScaler on older GPUs, fp32 otherwise. On a CPU
without bf16 instructions bf16 is emulated and slower than fp32, so auto keeps fp32 there.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from lmtool.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass(frozen=True)
class Precision:
    name: str  # bf16 | fp16 | fp32
    device_type: str  # cpu | cuda | mps

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _DTYPES[self.name]

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the matmuls run in (what the MFU peak is measured or looked up for)."""
        return self.autocast_dtype or torch.float32

    @property
    def needs_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)


def resolve_device(choice: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """`auto` = this process's GPU when CUDA is available, else CPU. `key`: the setting, named in errors."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(key, "CUDA is not available on this machine", value=choice)
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if choice == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(key, "MPS is not available on this machine", value=choice)
    return torch.device(choice)


def resolve_precision(choice: str, device: torch.device, key: str = "train.precision") -> Precision:
    """bf16 | fp16 | fp32 for `device` (`auto`: see above); `key`: the setting, named in errors."""
    if choice == "auto":
        choice = _auto_precision(device)
    if choice == "fp16" and device.type == "cpu":
        raise ConfigError(key, "fp16 needs a GPU; use bf16 or fp32 on CPU", value=choice)
    if choice == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(key, "this GPU has no bf16 support; use fp16 or auto", value=choice)
    return Precision(choice, device.type)


def _auto_precision(device: torch.device) -> str:
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when /proc/cpuinfo lists native bf16 instructions (avx512_bf16 or amx_bf16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def enable_tf32(device: torch.device) -> None:
    """TF32 matmuls and convolutions on NVIDIA GPUs (fp32 on CPU stays exact)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters from glibc's malloc.h


def keep_cpu_memory(device: torch.device) -> None:
    """On CPU with glibc, keep freed memory in the process instead of returning it to the OS.

    glibc serves blocks over 32 MB (a batch's logits and their gradient) with fresh mmaps that the
    kernel zero-fills page by page on every step, then unmaps them again; reusing the heap made a
    14M-parameter GPT-2 step 5-7% faster on 2 cores (PyTorch's CPU tuning guide gets the same from
    jemalloc or tcmalloc). The process keeps its peak memory, which training reaches every step anyway.
    """
    if device.type != "cpu" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)


def prepare_for_training(device: torch.device) -> None:
    """The process-wide settings a training run takes on `device`: TF32 matmuls, the kept CPU heap."""
    enable_tf32(device)
    keep_cpu_memory(device)


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (dropout, a new head's weights)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
