"""Checkpoints: atomic writes, integrity, retention, lineage, discovery of the latest good one, and loading.

A checkpoint `checkpoints/step-XXXXXXXX/` is a `save_pretrained` directory (safetensors, config,
tokenizer) that plain `transformers` loads (a LoRA run's holds its adapter: see
`lmtool.train.model_files`) or, under fsdp, a `sharded/` directory of torch.distributed.checkpoint
files (model and optimizer: see `lmtool.train.sharded`), plus `trainer_state.pt` (optimizer unless
sharded, scheduler, scaler, RNG states, data position, counters) and `checkpoint.json`, written last,
listing every file with its size and sha256. It is written under a temporary name, fsynced, then renamed (see
`lmtool.train.atomic`), so a crash mid-write leaves a `.tmp-*` directory that discovery ignores and
the next start removes. A checkpoint is *complete* when every listed file has its recorded size (cheap:
retention checks this) and *intact* when the hashes match too (checked on the one a run resumes from;
a bad one is skipped for the previous one).

Lineage: a run resumed from step S continues the line of checkpoints up to S. At its start, checkpoints
after S (an abandoned branch after a rollback, or broken ones) are moved to
`checkpoints/abandoned-<UTC time>/`, so that retention and `resume: auto` only see the current line.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from lmtool import console
from lmtool.errors import LmtoolError
from lmtool.train import atomic

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
MANIFEST = "checkpoint.json"
_NAME = re.compile(r"^step-(\d{8})$")
_OLD = re.compile(r"^\.old-step-(\d{8})$")  # the previous copy during a re-save (atomic.replace_dir)
_TMP = re.compile(r"^\.tmp-step-\d{8}-\d+$")  # a save in progress, or killed


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# --------------------------------------------------------------------------- writing


def save_checkpoint(
    run_dir: Path, step: int, model, tokenizer, config_yaml: str, state: dict[str, Any]
) -> Path:
    """Write checkpoint `step` atomically and return its directory (rank 0 only).

    A full disk is an LmtoolError; the partial copy is removed at once and earlier checkpoints stay.
    """
    final = Path(run_dir) / CHECKPOINTS / checkpoint_name(step)
    final.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        _write_rest(tmp, step, tokenizer, config_yaml, state)

    atomic.write_dir(temporary_dir(run_dir, step, os.getpid()), final, write, f"step {step}")
    return final


def temporary_dir(run_dir: Path, step: int, tag: int) -> Path:
    """Where checkpoint `step` is written before the rename; `tag` (rank 0's pid) tells saves apart."""
    return Path(run_dir) / CHECKPOINTS / f".tmp-{checkpoint_name(step)}-{tag}"


def finish_checkpoint(
    run_dir: Path, step: int, tmp: Path, tokenizer, config_yaml: str, state: dict[str, Any]
) -> Path:
    """Rank 0, once every rank has written its shards into `tmp`: add the rest and the manifest, rename."""
    final = Path(run_dir) / CHECKPOINTS / checkpoint_name(step)

    def write(tmp: Path) -> None:
        _write_rest(tmp, step, tokenizer, config_yaml, state)

    atomic.write_dir(tmp, final, write, f"step {step}", fresh=False)
    return final


def _write_rest(tmp: Path, step: int, tokenizer, config_yaml: str, state: dict[str, Any]) -> None:
    """Tokenizer, config, trainer state, then the manifest of every file in `tmp` (in subdirectories too)."""
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    (tmp / "lmtool_config.yaml").write_text(config_yaml, encoding="utf-8")
    with (tmp / STATE_FILE).open("wb") as file:  # through Python: a full disk raises OSError(ENOSPC)
        torch.save(state, file)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    names = [p.relative_to(tmp).as_posix() for p in files]
    manifest = {
        "step": step,
        "files": {name: p.stat().st_size for name, p in zip(names, files, strict=True)},
        "sha256": {name: atomic.sha256_file(p) for name, p in zip(names, files, strict=True)},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def prune_checkpoints(
    run_dir: Path, keep_last: int, best_step: int | None, written: int | None = None
) -> None:
    """Delete complete checkpoints older than the `keep_last` newest complete ones, except the best one and
    the one just `written`. Incomplete ones are neither counted nor deleted: lmtool deletes only checkpoints
    it can tell are whole and no longer needed (a broken one after the resumed step is moved aside at start)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return
    complete = [step for step in sorted(_steps(root)) if is_complete(root / checkpoint_name(step))]
    keep = {*complete[-keep_last:], best_step, written}
    for step in complete:
        if step not in keep:
            shutil.rmtree(root / checkpoint_name(step), ignore_errors=True)


def start_lineage(run_dir: Path, resumed: Path | None) -> None:
    """Before the first step (rank 0, run directory locked): clear what a killed save left, and move the
    checkpoints that are not part of this run's line (all after the resumed step) aside, saying so."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if _TMP.match(path.name):
            shutil.rmtree(path, ignore_errors=True)
        elif _OLD.match(path.name):
            current = root / path.name.removeprefix(".old-")
            if current.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:  # killed between the two renames of a re-save: this is the checkpoint
                os.replace(path, current)
    after, origin = -1, "this run starts from scratch"
    if resumed is not None:
        origin = f"this run resumes from {resumed}"
        if Path(resumed).resolve().parent == root.resolve():
            after = _step_of(Path(resumed))
    later = [step for step in sorted(_steps(root)) if step > after]
    if not later:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside, n = root / f"abandoned-{stamp}", 1
    while aside.exists():
        aside, n = root / f"abandoned-{stamp}-{n}", n + 1
    aside.mkdir()
    for step in later:
        os.replace(root / checkpoint_name(step), aside / checkpoint_name(step))
    atomic.fsync(root)
    console.warning(
        f"moved {len(later)} checkpoint(s) ({', '.join(checkpoint_name(s) for s in later)}) to {aside}: "
        f"{origin}, so they are not part of its line of checkpoints"
    )


# --------------------------------------------------------------------------- discovery


def _steps(root: Path) -> list[int]:
    return [int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]


def latest_step(run_dir: Path) -> int | None:
    """The step of the newest checkpoint directory (unverified: the name only), None without one."""
    root = Path(run_dir) / CHECKPOINTS
    return max(_steps(root), default=None) if root.is_dir() else None


def _step_of(path: Path) -> int:
    match = _NAME.match(path.name) or _OLD.match(path.name)
    return int(match.group(1)) if match else -1


def _candidates(root: Path) -> dict[int, Path]:
    """step → directory; a `.old-step-*` copy stands in for its step when a kill fell mid re-save."""
    found = {}
    for path in root.iterdir():
        if path.is_dir() and (match := _NAME.match(path.name) or _OLD.match(path.name)):
            step = int(match.group(1))
            if step not in found or path.name.startswith("step-"):
                found[step] = path
    return found


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text(encoding="utf-8"))


def is_complete(path: Path) -> bool:
    """Every file the manifest lists is present with the recorded size."""
    try:
        return all((path / name).stat().st_size == size for name, size in _manifest(path)["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def verify(path: Path) -> str | None:
    """None when the checkpoint is complete and every file matches its recorded sha256, else what is wrong.

    Checkpoints written before hashes were recorded are checked by size only.
    """
    if not is_complete(path):
        return f"files missing or cut short, or no valid {MANIFEST}"
    try:
        digests = _manifest(path).get("sha256", {})
        for name, digest in digests.items():
            if atomic.sha256_file(path / name) != digest:
                return f"{name} does not match its sha256 in {MANIFEST}"
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return f"cannot check its sha256 sums ({exc})"
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest intact checkpoint in `run_dir/checkpoints`, skipping (with a warning) broken ones."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    candidates = _candidates(root)
    for step in sorted(candidates, reverse=True):
        path = candidates[step]
        problem = verify(path)
        if problem is None:
            return path
        console.warning(f"ignoring checkpoint {path} ({problem}); trying the previous one")
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
    problem = verify(path)
    if problem is not None:
        raise LmtoolError(f"train.resume: {resume} is not a complete lmtool checkpoint: {problem}")
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
    params = dict(model.named_parameters(remove_duplicate=False))
    state = {_current_name(key, params): value for key, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
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


def restore_rng(per_rank: list, rank: int, world_size: int, seed: int, step: int) -> None:
    """This rank's saved generators; on another number of processes than saved, rank 0's, with the torch
    generator (dropout) reseeded per rank."""
    if len(per_rank) == world_size:
        set_rng_state(per_rank[rank])
        return
    set_rng_state(per_rank[0])
    torch.manual_seed(seed + rank + 1_000_003 * step)
    console.warning(
        f"resuming on {world_size} processes (saved on {len(per_rank)}): dropout streams reseeded"
    )


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


_LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


def _current_name(key: str, params: dict) -> str:
    """A layer norm's legacy name (`gamma`, `beta`), which some transformers 5 releases write back on save, as
    the module calls it (`weight`, `bias`)."""
    for legacy, current in _LEGACY_SUFFIXES.items():
        if key.endswith(legacy) and key not in params and key[: -len(legacy)] + current in params:
            return key[: -len(legacy)] + current
    return key
