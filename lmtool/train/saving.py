"""The engine's checkpoints, resume and final/: what the run's state is saved as and read back from.

Full checkpoints (one process, ddp) are written by rank 0 alone. Sharded ones (fsdp) are written by every
rank into one temporary directory (named after rank 0's pid, which every rank learns with the RNG states);
rank 0 adds the trainer state and the manifest and renames it only after every rank has written its
shards, so a checkpoint is complete only when the last rank has finished. With train.async_checkpoint the
shards are written in the background; that save is completed before the next one starts and before the
run ends, so a save still in flight when the process dies never becomes the latest checkpoint.

Either kind resumes under either strategy: torch.distributed.checkpoint reads shards into a whole model
as well as a sharded one, and a full checkpoint is sharded as it loads.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from lmtool import __version__, console
from lmtool.config import Config, dump_config
from lmtool.diskfull import is_disk_full
from lmtool.errors import LmtoolError
from lmtool.train import checkpoint, distributed, sharded
from lmtool.train.deadline import Deadline
from lmtool.train.distributed import DistEnv
from lmtool.train.final import best_checkpoint, write_final
from lmtool.train.model_files import ModelFiles
from lmtool.train.optim import load_optimizer_state
from lmtool.train.progress import Progress
from lmtool.train.resume_settings import warn_changed_settings
from lmtool.train.vocab_trim import save_final_model


@dataclass
class Trained:
    """What a checkpoint holds the state of, besides the progress counters. `schedule(done_steps)`: this
    config's learning-rate schedule positioned after `done_steps` (a resumed run keeps its new settings)."""

    model: torch.nn.Module  # unwrapped: what save_pretrained and the shards see
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Callable[[int], torch.optim.lr_scheduler.LRScheduler]
    global_batch: int


@dataclass
class RunFiles:
    """Where and what the run writes: its directory, the config and tokenizer saved with every checkpoint,
    how the model is written (`model_files`), and whether the best checkpoint is kept."""

    run_dir: Path
    config: Config
    tokenizer: object
    model_files: ModelFiles
    keep_best: bool


@dataclass
class _Pending:
    """A sharded save whose shards may still be being written (async)."""

    future: Future | None
    tmp: Path
    step: int
    payload: dict


class GatheredFiles(ModelFiles):
    """final/ from the whole weights gathered at rank 0 (sharded training)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def export(self, model: torch.nn.Module, tokenizer, best: Path | None, directory: Path) -> None:
        save_final_model(model, tokenizer, directory, self.state)


class Saver:
    """Saves and restores the model, optimizer, schedule, scaler, RNG states and progress of a run.
    `sharded`: the strategy writes sharded checkpoints (fsdp); `deadline` learns how long saves take."""

    def __init__(
        self,
        trained: Trained,
        files: RunFiles,
        env: DistEnv,
        device: torch.device,
        sharded: bool,
        deadline: Deadline,
    ):
        self.trained, self.files, self.env, self.device = trained, files, env, device
        self.sharded, self.deadline = sharded, deadline
        self.cfg = cfg = files.config.train
        # train.async_checkpoint without fsdp is refused by the config's schema
        # async_save's writes and their collectives run in a thread: on a group of their own (gloo, on CPU).
        self.group = (
            dist.new_group(backend="gloo") if cfg.async_checkpoint and dist.is_initialized() else None
        )
        self.pending: _Pending | None = None
        self.saved_step: int | None = None
        self.progress: Progress | None = None  # set by save
        if cfg.async_checkpoint:
            distributed.on_shutdown(self.complete_on_stop)

    def complete_on_stop(self) -> None:
        """All ranks stopped alike (an error on every rank) while shards were written in the background:
        complete that checkpoint, as a synchronous save would have been, rather than leave it unfinished."""
        if self.pending is None:
            return
        step = self.pending.step
        try:
            self.finish_pending()
        except Exception as exc:  # noqa: BLE001 - the stop's own error is the one to report
            console.warning(f"the checkpoint of step {step} (written in the background) is incomplete: {exc}")
        else:
            console.info(
                f"completed the checkpoint of step {step}, written in the background before the stop"
            )

    # ------------------------------------------------------------------ saving

    def save(self, progress: Progress, scheduler, wait: bool = True) -> None:
        """Checkpoint the current step (all ranks), then apply retention. All ranks learn whether it could be
        written (a full disk is exit 2), so that they stop together. `wait` false: with async_checkpoint
        the shards are written in the background, and completed at the next save."""
        env = self.env
        self.progress = progress  # the engine's own counters, read again by retention (best_step)
        if self.saved_step == progress.step:
            self.finish_pending()
            if env.is_main:
                self.retain()  # the final eval may have found a new best since this step was saved
            return
        self.finish_pending()
        self.saved_step = progress.step
        mark = (checkpoint.rng_state(), os.getpid())
        if env.enabled:
            per_rank = [None] * env.world_size
            dist.all_gather_object(per_rank, mark)
        else:
            per_rank = [mark]
        rngs = [rng for rng, _ in per_rank]
        started = time.monotonic()
        background = self.cfg.async_checkpoint and not wait
        if self.sharded:
            self._save_sharded(progress, scheduler, rngs, per_rank[0][1], background)
        else:
            self._save_full(progress, scheduler, rngs)
        stall = time.monotonic() - started
        self.deadline.saved(max(stall, self.deadline.last_save_s) if background else stall)

    def _payload(self, progress: Progress, scheduler, rngs: list, optimizer: bool) -> dict:
        trained = self.trained
        payload = {
            "progress": asdict(progress),
            "scheduler": scheduler.state_dict(),
            "scaler": trained.scaler.state_dict(),
            "rng": rngs,
            "world_size": self.env.world_size,
            "global_batch": trained.global_batch,
            "lmtool_version": __version__,
        }
        if optimizer:
            payload["optimizer"] = trained.optimizer.state_dict()
        return copy.deepcopy(payload)  # a background save must not see later steps

    def _save_full(self, progress: Progress, scheduler, rngs: list) -> None:
        files, failure = self.files, None
        if self.env.is_main:
            try:
                checkpoint.save_checkpoint(
                    files.run_dir,
                    progress.step,
                    self.trained.model,
                    files.tokenizer,
                    dump_config(files.config),
                    self._payload(progress, scheduler, rngs, optimizer=True),
                )
                self.retain()
            except LmtoolError as exc:
                failure = exc
        if distributed.any_rank(failure is not None, self.device):
            raise failure or LmtoolError(f"rank 0 could not save the checkpoint of step {progress.step}")

    def _save_sharded(self, progress: Progress, scheduler, rngs: list, tag: int, background: bool) -> None:
        step = progress.step
        tmp = checkpoint.temporary_dir(self.files.run_dir, step, tag)
        if self.env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        distributed.barrier()  # the directory exists before any rank writes into it
        future, error = None, None
        try:
            future = sharded.save(
                self.trained.model,
                self.trained.optimizer,
                tmp / sharded.SHARDED,
                background=background,
                process_group=self.group,
            )
        except Exception as exc:  # every rank learns of it in finish_pending
            error = exc
        self.pending = _Pending(future, tmp, step, self._payload(progress, scheduler, rngs, optimizer=False))
        if not background or error is not None:
            self.finish_pending(error)

    def finish_pending(self, error: BaseException | None = None) -> None:
        """Wait for the shards of the pending save on every rank, then rank 0 completes and renames it."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        env, files = self.env, self.files
        if pending.future is not None:
            try:
                pending.future.result()
            except Exception as exc:
                error = exc
        if distributed.any_rank(error is not None, self.device):
            if env.is_main:
                shutil.rmtree(pending.tmp, ignore_errors=True)
            if error is not None and is_disk_full(error):
                raise LmtoolError(
                    f"no space left on device while saving step {pending.step} to {pending.tmp.parent} "
                    "(the partial copy was removed, earlier ones are kept): free some space (or raise the file-size limit, `ulimit -f`) and rerun"
                ) from error
            if error is not None:
                raise error
            raise LmtoolError(
                f"another rank could not write its shards of the checkpoint of step {pending.step}"
            )
        failure = None
        if env.is_main:
            try:
                checkpoint.finish_checkpoint(
                    files.run_dir,
                    pending.step,
                    pending.tmp,
                    files.tokenizer,
                    dump_config(files.config),
                    pending.payload,
                )
                self.retain(pending.step)
            except LmtoolError as exc:
                failure = exc
        if distributed.any_rank(failure is not None, self.device):
            raise failure or LmtoolError(f"rank 0 could not save the checkpoint of step {pending.step}")

    def retain(self, written: int | None = None) -> None:
        best = self.progress.best_step if self.files.keep_best else None
        written = self.saved_step if written is None else written
        checkpoint.prune_checkpoints(self.files.run_dir, self.cfg.keep_last, best, written=written)

    # ------------------------------------------------------------------ resuming

    def restore(self, path: Path) -> tuple[Progress, torch.optim.lr_scheduler.LRScheduler]:
        """Model, optimizer moments, scaler and RNG streams from checkpoint `path` (all ranks); returns the
        progress read back and this config's schedule positioned after it."""
        trained, files, env = self.trained, self.files, self.env
        model, optimizer = trained.model, trained.optimizer
        saved = checkpoint.load_trainer_state(path)
        if sharded.is_sharded(path) or (self.sharded and env.enabled):
            # DCP reads shards into any model, sharded or whole; a full checkpoint is sharded as it loads.
            own = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
            if sharded.is_sharded(path):
                sharded.load(model, optimizer, path)
            else:
                sharded.load_full(model, optimizer, path, saved["optimizer"])
            for group, settings in zip(optimizer.param_groups, own, strict=True):
                group.update(settings)  # this config's lr, betas, eps and weight decay
        else:
            files.model_files.load(model, path)
            load_optimizer_state(optimizer, saved["optimizer"])
        progress = Progress.from_saved(saved["progress"])
        scheduler = trained.schedule(progress.step)  # the schedule from this config, after the saved steps
        trained.scaler.load_state_dict(saved["scaler"])
        checkpoint.restore_rng(saved["rng"], env.rank, env.world_size, files.config.run.seed, progress.step)
        if saved["global_batch"] != trained.global_batch:
            console.warning(
                f"global batch changed from {saved['global_batch']} to {trained.global_batch} sequences on resume"
            )
        if Path(path).resolve().parent == (files.run_dir / checkpoint.CHECKPOINTS).resolve():
            self.saved_step = progress.step  # already saved: a run resumed at its end does not save again
        console.info(f"resuming from {path} (step {progress.step}, {progress.samples_seen:,} samples seen)")
        warn_changed_settings(path, files.config)
        return progress, scheduler

    # ------------------------------------------------------------------ final/

    def write_final(self, progress: Progress, best_metric: str) -> Path:
        """final/ in place on every rank, or the same error on all (rank 0 writes it). Sharded: the best
        checkpoint's weights are loaded on all ranks, then the whole weights gathered at rank 0."""
        files, model = self.files, self.trained.model
        final = files.run_dir / "final"
        best = None
        if self.env.is_main and self.cfg.final_model == "best":
            best = best_checkpoint(files.run_dir, progress, best_metric)
        model_files = files.model_files
        if self.sharded:
            shared = [best]
            if self.env.enabled:
                dist.broadcast_object_list(shared, src=0)
            if shared[0] is not None:
                sharded.load_model(model, shared[0])
            best = None
            state = sharded.full_model_state(model)
            model_files = GatheredFiles(state) if state is not None else model_files
        failure = None
        if self.env.is_main:
            try:
                write_final(final, model, files.tokenizer, best, model_files)
            except LmtoolError as exc:
                failure = exc
        if distributed.any_rank(failure is not None, self.device):  # also the barrier: final/ is in place
            raise failure or LmtoolError(f"rank 0 could not write {final}")
        return final
