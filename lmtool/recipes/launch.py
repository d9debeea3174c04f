"""The one launcher of every training recipe: the processes, the run directory and its lock, the
processed data, the device, precision and seeds, the Trainer. A recipe (pretrain, finetune) supplies only
what differs: how its data is opened and checked, and its model and task (a `Recipe`)."""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lmtool import console
from lmtool.config import Config, ConfigError, dump_config
from lmtool.data.processed import Processed, ensure_processed, is_stale
from lmtool.runtime import prepare_for_training, resolve_device, resolve_precision, seed_everything
from lmtool.tasks.registry import preprocess
from lmtool.train import checkpoint, distributed
from lmtool.train.engine import Trainer
from lmtool.train.failures import PeerWatch, leave_on_failure, whereabouts
from lmtool.train.model_files import ModelFiles
from lmtool.train.rundir import check_run_dir, finished_step, mark_finished, run_dir_lock


@dataclass
class Launched:
    """What the launcher hands a recipe's `build`: this process's place in the job and the opened data."""

    config: Config
    env: distributed.DistEnv
    device: torch.device
    data: Processed


@dataclass
class Setup:
    """What a recipe's `build` returns: the model and task to train, the data as the task reads it, the
    config (a recipe may adjust it, e.g. its eval schedule) and the Trainer's recipe-specific options."""

    config: Config
    model: torch.nn.Module
    task: object
    train_data: object
    eval_data: object
    done: str  # what final/ holds, for the last line on stderr
    sequence_length: int | None = None
    lr_scale: Callable[[str], float] | None = None
    order_lengths: Sequence[int] | None = None
    model_files: ModelFiles | None = None


@dataclass(frozen=True)
class Recipe:
    """What one training command supplies. `checks`: settings refused before any preprocessing;
    `open_data`: the processed directory opened and checked against the config; `check_data`: what can
    only be checked with the data (before the run directory is touched); `build`: the model and task,
    after the precision is known and before the training seeds."""

    open_data: Callable[[Path, Config], Processed]
    build: Callable[[Launched], Setup]
    checks: Callable[[Config], None] | None = None
    check_data: Callable[[Config, Processed], None] | None = None


def launch(config: Config, recipe: Recipe, overwrite: bool) -> Path:
    """Train as the config says with `recipe`, in this process (under torchrun: in each); return final/."""
    return run_on_every_rank(config, functools.partial(_train, recipe), overwrite, checks=recipe.checks)


def _train(
    recipe: Recipe, config: Config, env: distributed.DistEnv, device: torch.device, overwrite: bool
) -> Path:
    """One rank's run: the data opened and checked before the run directory changes; the precision, the
    recipe's model and task, the per-rank seeds, then the engine."""
    processed = ensure_processed(config, preprocess)
    data = recipe.open_data(processed, config)
    refuse_stale(processed, config, device)
    if recipe.check_data is not None:
        recipe.check_data(config, data)
    resume_from = open_run(config, env, overwrite)
    precision = resolve_precision(config.train.precision, device)
    prepare_for_training(device)
    setup = recipe.build(Launched(config, env, device, data))
    use_fused_loss(setup.task, setup.model.to(device), setup.config, device, env.world_size)
    seed_everything(config.run.seed + env.rank)  # dropout differs per rank; resume restores these streams
    trainer = Trainer(
        config=setup.config,
        model=setup.model,
        task=setup.task,
        tokenizer=data.tokenizer,
        train_data=setup.train_data,
        eval_data=setup.eval_data,
        run_dir=Path(config.run.output_dir),
        env=env,
        device=device,
        precision=precision,
        resume_from=resume_from,
        sequence_length=setup.sequence_length,
        lr_scale=setup.lr_scale,
        order_lengths=setup.order_lengths,
        model_files=setup.model_files,
    )
    final = trainer.fit()
    write_run_report(config, env)
    console.info(f"done: {setup.done} in {final}")
    return final


def run_on_every_rank(
    config: Config,
    recipe: Callable[[Config, distributed.DistEnv, torch.device, bool], Path],
    overwrite: bool,
    checks: Callable[[Config], None] | None = None,
) -> Path:
    """Run `recipe` in this process (under torchrun: in each), inside its process group.

    Before the group exists, every process runs the config `checks` and makes sure the processed data is
    there (`ensure_processed`), so that preprocessing, however long, is not under the collective timeout.
    Then all ranks train; rank 0 writes. A rank that fails ends the others (train/failures.py).
    """
    env = distributed.read_env()
    run_dir = Path(config.run.output_dir)
    config_yaml = dump_config(config)
    finished = None if overwrite or config.train.resume != "auto" else finished_step(run_dir, config_yaml)
    processed = Path(config.data.processed_dir).expanduser()
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
    ensure_processed(config, preprocess)
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


def refuse_stale(processed: Path, config: Config, device: torch.device) -> None:
    """Exit 2 on every rank when rank 0 finds `processed` made from other inputs than this config's."""
    if distributed.any_rank(distributed.read_env().is_main and is_stale(processed, config), device):
        raise ConfigError(
            "data.processed_dir",
            f"{processed} was preprocessed from other sources or data/tokenizer settings than this config's",
            has_value=False,
            hint="run `lmtool preprocess --overwrite` with this config, or point data.processed_dir elsewhere",
        )


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
