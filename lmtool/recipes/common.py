"""What every training recipe does around its own model and task: the processes, the run directory,
the processed data, the seeds."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lmtool import console
from lmtool.config import Config, ConfigError, dump_config
from lmtool.errors import LmtoolError
from lmtool.runlock import DirLock, LockBusy
from lmtool.train import checkpoint, distributed
from lmtool.train.failures import PeerWatch, leave_on_failure, whereabouts
from lmtool.train.precision import resolve_device
from lmtool.train.rundir import check_run_dir, finished_step, mark_finished, run_dir_lock

Recipe = Callable[[Config, distributed.DistEnv, torch.device, bool], Path]


def run_on_every_rank(
    config: Config, recipe: Recipe, overwrite: bool, checks: Callable[[Config], None] | None = None
) -> Path:
    """Run `recipe` in this process (under torchrun: in each), inside its process group.

    Before the group exists, every process runs the config `checks` and makes sure the processed data is
    there (`processed_dir`), so that preprocessing, however long, is not under the collective timeout.
    Then all ranks train; rank 0 writes. A rank that fails ends the others (train/failures.py).
    """
    env = distributed.read_env()
    run_dir = Path(config.run.output_dir)
    config_yaml = dump_config(config)
    finished = None if overwrite or config.train.resume != "auto" else finished_step(run_dir, config_yaml)
    processed = Path(os.path.expanduser(config.data.processed_dir))
    stale = finished is not None and processed.exists() and is_stale(processed, config)  # refused below
    if finished is not None and not stale:
        console.info(f"already finished at step {finished}: the model is in {run_dir / 'final'}; nothing to do "
                     "(raise train.max_steps or train.epochs to train on, or --overwrite to start again)")  # fmt: skip
        return run_dir / "final"
    device = resolve_device(config.train.device, env.local_rank)
    check_output_dir(run_dir)  # before the lock, which lives beside it
    if checks is not None:
        checks(config)
    check_run_dir(config, Path(config.run.output_dir), overwrite)  # refused before preprocessing, too
    processed_dir(config)
    timeout = config.train.distributed.timeout
    distributed.init(env, device, timeout)
    watch = PeerWatch.start(env.world_size, env.rank)
    whereabouts.step = None
    with contextlib.ExitStack() as held:  # the run directory's lock is released after a stop is handled
        try:
            held.enter_context(run_dir_lock(Path(config.run.output_dir), env, device))
            result = recipe(config, env, device, overwrite)
            if env.is_main:
                mark_finished(run_dir, config_yaml, checkpoint.latest_step(run_dir))
        except BaseException as exc:
            # Raised on every rank alike (config checks, agreed stop): the group is left in order (a
            # background save completed) and the error goes on to the CLI. Raised on some ranks only:
            # the whole job ends within seconds.
            leave_on_failure(watch, exc, timeout)
            raise
        finally:
            distributed.forget_shutdown_hooks()  # this run's only (several runs may share a process)
            console.close_log()
    if watch is not None:
        watch.close()
    distributed.shutdown()
    return result


def open_run(config: Config, env: distributed.DistEnv, overwrite: bool) -> Path | None:
    """Check run.output_dir, wipe it for --overwrite (rank 0), and return the checkpoint to resume from."""
    run_dir = Path(config.run.output_dir)
    check_run_dir(config, run_dir, overwrite)
    resume_from, wipe = checkpoint.resolve_resume(run_dir, config.train.resume, overwrite)
    distributed.barrier()  # every rank has decided before rank 0 changes anything
    if env.is_main and wipe:
        console.info(f"--overwrite: removing {run_dir}")
        shutil.rmtree(run_dir)
    return resume_from


def check_output_dir(run_dir: Path) -> None:
    """run.output_dir must be a directory or creatable as one: not a file, nor under a file."""
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = (
                    "is a file, not a directory" if path == run_dir else f"lies under {path}, which is a file"
                )
                raise ConfigError("run.output_dir", where, value=str(run_dir))
            return


def processed_dir(config: Config) -> Path:
    """data.processed_dir, preprocessed first if it does not exist. Every process of the job calls this
    before the process group exists; the lock file beside processed_dir (on the shared filesystem, so
    across nodes too) lets the first one preprocess while the others wait for it without a time limit and
    then find the directory made. If it fails, the directory is not made and the waiting processes exit 2
    naming it (its error is in its own output) rather than preprocess again, one after the other."""
    processed = Path(os.path.expanduser(config.data.processed_dir))
    if processed.exists():
        return processed
    from lmtool.tasks.registry import preprocess as run_preprocess

    console.info(f"{processed} does not exist: preprocessing first")
    try:
        return run_preprocess(config)
    except LockBusy as busy:
        holder = busy.holder
    with DirLock(
        processed,
        "data.processed_dir",
        on_wait=lambda h: console.info(f"waiting for {h} to preprocess {processed}"),
    ):
        pass  # taken once its holder is done
    if not processed.exists():
        raise LmtoolError(
            f"data.processed_dir: {holder}, which was preprocessing {processed}, ended without making it "
            "(its error is in its own output); fix that and run again"
        )
    return processed


def refuse_stale(processed: Path, config: Config, device: torch.device) -> None:
    """Exit 2 on every rank when rank 0 finds `processed` made from other inputs than this config's."""
    if distributed.any_rank(distributed.read_env().is_main and is_stale(processed, config), device):
        raise ConfigError(
            "data.processed_dir",
            f"{processed} was preprocessed from other sources or data/tokenizer settings than this config's",
            has_value=False,
            hint="run `lmtool preprocess --overwrite` with this config, or point data.processed_dir elsewhere",
        )


def is_stale(processed: Path, config: Config) -> bool:
    """True when `lmtool preprocess` made `processed` with another content key than this config gives
    (changed corpus, cleaning, tokenizer or data settings). A directory without a key (not made by
    lmtool preprocess) or a config without sources cannot be compared and is used as is."""
    from lmtool.data import sources as src
    from lmtool.data.preprocess import content_key

    try:
        made = json.loads((processed / "manifest.json").read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError):
        return False
    data = config.data
    if made is None or not data.sources:
        return False
    try:
        sources = [src.resolve(s, f"data.sources.{i}") for i, s in enumerate(data.sources)]
        sources += [
            src.resolve(s, f"data.validation_sources.{i}") for i, s in enumerate(data.validation_sources)
        ]
    except LmtoolError as exc:
        console.warning(f"cannot check that {processed} is up to date ({exc}); training on it as is")
        return False
    return content_key(config, sources) != made


def write_run_report(config: Config, env: distributed.DistEnv) -> None:
    """logging.report: rank 0 writes report.md and the plots of the finished run and names report.md on
    stderr (stdout carries the model directory). The model is already saved: a failure here only warns."""
    if not (env.is_main and config.logging.report):
        return
    from lmtool.reporting import write_report

    try:
        path = write_report([Path(config.run.output_dir)])
    except Exception as exc:  # noqa: BLE001 - the run itself succeeded
        console.warning(f"could not write the run report ({type(exc).__name__}: {exc}); try `lmtool report`")
        return
    console.info(f"report: {path}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_fused_loss(
    task, model: torch.nn.Module, config: Config, device: torch.device, world_size: int
) -> None:
    """Turn on train.fused_loss for a task that supports it (clm, sft) when the model's head allows it."""
    from lmtool.tasks.linear_ce import head_weight, liger_available

    setting, cfg = config.train.fused_loss, config.train
    if not hasattr(task, "fused_head") or setting is False:
        return
    if setting == "auto" and not (device.type == "cuda" and liger_available()):
        return
    if cfg.distributed.strategy == "fsdp" and world_size > 1:
        if setting is True:
            console.info("train.fused_loss: off under fsdp on several processes (the head is sharded)")
        return
    task.fused_head = head_weight(model) is not None
    if setting is True and not task.fused_head:
        console.info(
            f"train.fused_loss: {type(model).__name__}'s logits are not its hidden states times a linear head: off"
        )
