"""Checkpoints: atomic writes, retention, discovery of the latest complete one, and loading.

A checkpoint `checkpoints/step-XXXXXXXX/` is a `save_pretrained` directory (safetensors, config,
tokenizer) that plain `transformers` loads, plus `trainer_state.pt` (optimizer, scheduler, scaler,
RNG states, data position, counters) and `checkpoint.json`, written last, listing every file with
its size. It is written under a temporary name, fsynced, then renamed, so a crash mid-write
leaves a `.tmp-*` directory that discovery ignores; a directory whose files do not match its
`checkpoint.json` (e.g. truncated by a full disk) is ignored too.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from lmtool import console
from lmtool.errors import LmtoolError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
MANIFEST = "checkpoint.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# --------------------------------------------------------------------------- writing


def save_checkpoint(
    run_dir: Path, step: int, model, tokenizer, config_yaml: str, state: dict[str, Any]
) -> Path:
    """Write checkpoint `step` atomically and return its directory (rank 0 only)."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    (tmp / "lmtool_config.yaml").write_text(config_yaml, encoding="utf-8")
    torch.save(state, tmp / STATE_FILE)
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1), encoding="utf-8")
    for path in tmp.iterdir():
        _fsync(path)
    _fsync(tmp)
    if final.exists():  # re-saving the same step (e.g. end of run right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_checkpoints(run_dir: Path, keep_last: int, best_step: int | None) -> None:
    """Delete all but the `keep_last` newest checkpoints (and the best one, when kept), and stale temp dirs."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return
    steps = sorted(_steps(root))
    for step in steps[:-keep_last]:
        if step != best_step:
            shutil.rmtree(root / checkpoint_name(step), ignore_errors=True)
    for tmp in root.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- discovery


def _steps(root: Path) -> list[int]:
    return [int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]


def is_complete(path: Path) -> bool:
    """Every file the manifest lists is present with the recorded size."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        return all((path / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in `run_dir/checkpoints`, skipping (with a warning) broken ones."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    for step in sorted(_steps(root), reverse=True):
        path = root / checkpoint_name(step)
        if is_complete(path):
            return path
        console.warning(f"ignoring incomplete checkpoint {path}")
    return None


def resolve_resume(run_dir: Path, resume: str, overwrite: bool) -> tuple[Path | None, bool]:
    """Decide how a run starts: (checkpoint to resume from or None, whether to wipe the run directory first).

    An existing, non-empty run directory is continued (`resume: auto`), replaced (`--overwrite`)
    or refused (`resume: never`), never silently mixed with a new run. Reads only, so every rank
    can call it; rank 0 does the wiping.
    """
    run_dir = Path(run_dir)
    exists = run_dir.is_dir() and any(run_dir.iterdir())
    if overwrite:
        return None, exists
    if resume == "never":
        if exists:
            raise LmtoolError(
                f"run directory {run_dir} already exists; pass --overwrite to replace it or set train.resume: auto to continue it"
            )
        return None, False
    if resume == "auto":
        return (latest_checkpoint(run_dir) if exists else None), False
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise LmtoolError(f"train.resume: checkpoint directory not found: {resume}")
    if not is_complete(path):
        raise LmtoolError(f"train.resume: {resume} is not a complete lmtool checkpoint (no valid {MANIFEST})")
    return path, False


# --------------------------------------------------------------------------- loading


def load_trainer_state(path: Path) -> dict[str, Any]:
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a checkpoint's safetensors into `model` in place (tied weights come along with their source)."""
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise LmtoolError(f"checkpoint {path} has no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise LmtoolError(
            f"checkpoint {path} does not match the model (missing {untied[:3]}, unexpected {list(unexpected)[:3]}): "
            "was it written with a different model.config?"
        )


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain values (loadable with weights_only=True)."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
