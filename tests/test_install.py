"""`make install`'s torch check (scripts/check_torch_build.py): the torch build must match the machine,
the CPU build without an NVIDIA GPU, a CUDA build with one."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import torch

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "check_torch_build.py"


def _check():
    spec = importlib.util.spec_from_file_location("check_torch_build", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_build_that_does_not_match_the_machine_is_named_with_the_fix():
    check = _check()
    assert check.build_mismatch(None, has_gpu=False) is None
    assert check.build_mismatch("12.8", has_gpu=True) is None
    cuda_on_cpu = check.build_mismatch("12.8", has_gpu=False)
    assert "CUDA 12.8" in cuda_on_cpu and "https://download.pytorch.org/whl/cpu" in cuda_on_cpu
    assert "CPU build" in check.build_mismatch(None, has_gpu=True)


def test_the_installed_torch_matches_this_machine():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert torch.__version__ in proc.stderr
    assert (torch.version.cuda is None) == (shutil.which("nvidia-smi") is None)


def test_make_install_asks_for_the_cpu_build_first_and_checks_it_after():
    """The public index's torch is the CUDA build: without a GPU it must never be asked for unpinned."""
    recipe = (ROOT / "Makefile").read_text().split("\ninstall:\n", 1)[1].split("\n\n", 1)[0]
    cpu_install = recipe.split("nvidia-smi", 1)[1]
    assert '"torch==$(TORCH_CPU_VERSION)+cpu"' in cpu_install
    assert "--index-url $(TORCH_CPU_INDEX)" in cpu_install
    assert '"torch==$(TORCH_CPU_VERSION)" ' not in cpu_install  # the default index's build: CUDA
    assert recipe.rstrip().endswith("$(BIN)/python scripts/check_torch_build.py")
