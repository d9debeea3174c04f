"""Run by `make install`: the installed torch build must match the machine, CUDA with an NVIDIA GPU and the
CPU build without one. A CPU-only machine with the CUDA build carries GBs of nvidia-* libraries it cannot
use; a GPU machine with the CPU build trains on the CPU without saying so. Exit 1 naming the fix."""

from __future__ import annotations

import shutil
import sys

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def build_mismatch(cuda_version: str | None, has_gpu: bool) -> str | None:
    """What is wrong with a torch built for `cuda_version` (None: the CPU build) on this machine, or None."""
    if has_gpu and cuda_version is None:
        return "this machine has an NVIDIA GPU (nvidia-smi) but torch is the CPU build: pip install --force-reinstall torch"
    if not has_gpu and cuda_version is not None:
        return (
            f"this machine has no NVIDIA GPU (no nvidia-smi) but torch is built for CUDA {cuda_version}: "
            f"pip uninstall -y torch && pip install torch --index-url {CPU_INDEX}"
        )
    return None


def main() -> int:
    import torch

    print(f"torch {torch.__version__} (CUDA: {torch.version.cuda or 'none, CPU build'})", file=sys.stderr)
    problem = build_mismatch(torch.version.cuda, shutil.which("nvidia-smi") is not None)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
