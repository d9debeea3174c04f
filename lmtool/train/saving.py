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
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from lmtool import __version__, console
from lmtool.config import dump_config
from lmtool.diskfull import is_disk_full
from lmtool.errors import LmtoolError
from lmtool.train import checkpoint, distributed, sharded
from lmtool.train.final import best_checkpoint, write_final
from lmtool.train.model_files import ModelFiles
from lmtool.train.optim import build_scheduler, load_optimizer_state
from lmtool.train.progress import Progress
from lmtool.train.resume_settings import warn_changed_settings
from lmtool.train.vocab_trim import save_final_model

if TYPE_CHECKING:
    from lmtool.train.engine import Trainer


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
    """Saves and restores a Trainer's model, optimizer, schedule, scaler, RNG states and progress."""

    def __init__(self, trainer: Trainer):
        self.t = trainer
        self.sharded = trainer.strategy.sharded_checkpoints
        cfg = trainer.cfg  # train.async_checkpoint without fsdp is refused by the config's schema
        # async_save's writes and their collectives run in a thread: on a group of their own (gloo, on CPU).
        self.group = (
            dist.new_group(backend="gloo") if cfg.async_checkpoint and dist.is_initialized() else None
        )
        self.pending: _Pending | None = None
        self.saved_step: int | None = None
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

    def save(self, wait: bool = True) -> None:
        """Checkpoint the current step (all ranks), then apply retention. All ranks learn whether it could be
        written (a full disk is exit 2), so that they stop together. `wait` false: with async_checkpoint
        the shards are written in the background, and completed at the next save."""
        t = self.t
        if self.saved_step == t.state.step:
            self.finish_pending()
            if t.env.is_main:
                self.retain()  # the final eval may have found a new best since this step was saved
            return
        self.finish_pending()
        self.saved_step = t.state.step
        mark = (checkpoint.rng_state(), os.getpid())
        if t.env.enabled:
            per_rank = [None] * t.env.world_size
            dist.all_gather_object(per_rank, mark)
        else:
            per_rank = [mark]
        rngs = [rng for rng, _ in per_rank]
        started = time.monotonic()
        background = t.cfg.async_checkpoint and not wait
        if self.sharded:
            self._save_sharded(rngs, per_rank[0][1], background)
        else:
            self._save_full(rngs)
        stall = time.monotonic() - started
        t.deadline.saved(max(stall, t.deadline.last_save_s) if background else stall)

    def _payload(self, rngs: list, optimizer: bool) -> dict:
        t = self.t
        payload = {
            "progress": asdict(t.state),
            "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict(),
            "rng": rngs,
            "world_size": t.env.world_size,
            "global_batch": t.plan.global_batch,
            "lmtool_version": __version__,
        }
        if optimizer:
            payload["optimizer"] = t.optimizer.state_dict()
        return copy.deepcopy(payload)  # a background save must not see later steps

    def _save_full(self, rngs: list) -> None:
        t, failure = self.t, None
        if t.env.is_main:
            try:
                checkpoint.save_checkpoint(
                    t.run_dir,
                    t.state.step,
                    t.raw_model,
                    t.tokenizer,
                    dump_config(t.config),
                    self._payload(rngs, optimizer=True),
                )
                self.retain()
            except LmtoolError as exc:
                failure = exc
        if distributed.any_rank(failure is not None, t.device):
            raise failure or LmtoolError(f"rank 0 could not save the checkpoint of step {t.state.step}")

    def _save_sharded(self, rngs: list, tag: int, background: bool) -> None:
        t, step = self.t, self.t.state.step
        tmp = checkpoint.temporary_dir(t.run_dir, step, tag)
        if t.env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        distributed.barrier()  # the directory exists before any rank writes into it
        future, error = None, None
        try:
            future = sharded.save(
                t.raw_model,
                t.optimizer,
                tmp / sharded.SHARDED,
                background=background,
                process_group=self.group,
            )
        except Exception as exc:  # every rank learns of it in finish_pending
            error = exc
        self.pending = _Pending(future, tmp, step, self._payload(rngs, optimizer=False))
        if not background or error is not None:
            self.finish_pending(error)

    def finish_pending(self, error: BaseException | None = None) -> None:
        """Wait for the shards of the pending save on every rank, then rank 0 completes and renames it."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        t = self.t
        if pending.future is not None:
            try:
                pending.future.result()
            except Exception as exc:
                error = exc
        if distributed.any_rank(error is not None, t.device):
            if t.env.is_main:
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
        if t.env.is_main:
            try:
                checkpoint.finish_checkpoint(
                    t.run_dir, pending.step, pending.tmp, t.tokenizer, dump_config(t.config), pending.payload
                )
                self.retain(pending.step)
            except LmtoolError as exc:
                failure = exc
        if distributed.any_rank(failure is not None, t.device):
            raise failure or LmtoolError(f"rank 0 could not save the checkpoint of step {pending.step}")

    def retain(self, written: int | None = None) -> None:
        t = self.t
        best = t.state.best_step if t.keep_best else None
        written = self.saved_step if written is None else written
        checkpoint.prune_checkpoints(t.run_dir, t.cfg.keep_last, best, written=written)

    # ------------------------------------------------------------------ resuming

    def restore(self, path: Path) -> None:
        """Model, optimizer moments, progress, scaler and RNG streams from checkpoint `path` (all ranks)."""
        t = self.t
        saved = checkpoint.load_trainer_state(path)
        if sharded.is_sharded(path) or (self.sharded and t.env.enabled):
            # DCP reads shards into any model, sharded or whole; a full checkpoint is sharded as it loads.
            own = [{k: v for k, v in group.items() if k != "params"} for group in t.optimizer.param_groups]
            if sharded.is_sharded(path):
                sharded.load(t.raw_model, t.optimizer, path)
            else:
                sharded.load_full(t.raw_model, t.optimizer, path, saved["optimizer"])
            for group, settings in zip(t.optimizer.param_groups, own, strict=True):
                group.update(settings)  # this config's lr, betas, eps and weight decay
        else:
            t.model_files.load(t.raw_model, path)
            load_optimizer_state(t.optimizer, saved["optimizer"])
        t.state = Progress.from_saved(saved["progress"])
        # The schedule from this config, positioned after the saved steps.
        t.scheduler = build_scheduler(
            t.optimizer, t.cfg, t.plan.total_steps, t.warmup, done_steps=t.state.step
        )
        t.scaler.load_state_dict(saved["scaler"])
        checkpoint.restore_rng(saved["rng"], t.env.rank, t.env.world_size, t.config.run.seed, t.state.step)
        if saved["global_batch"] != t.plan.global_batch:
            console.warning(
                f"global batch changed from {saved['global_batch']} to {t.plan.global_batch} sequences on resume"
            )
        if Path(path).resolve().parent == (t.run_dir / checkpoint.CHECKPOINTS).resolve():
            self.saved_step = t.state.step  # already saved: a run resumed at its end does not save again
        console.info(f"resuming from {path} (step {t.state.step}, {t.state.samples_seen:,} samples seen)")
        warn_changed_settings(path, t.config)

    # ------------------------------------------------------------------ final/

    def write_final(self) -> Path:
        """final/ in place on every rank, or the same error on all (rank 0 writes it). Sharded: the best
        checkpoint's weights are loaded on all ranks, then the whole weights gathered at rank 0."""
        t = self.t
        final = t.run_dir / "final"
        best = None
        if t.env.is_main and t.cfg.final_model == "best":
            best = best_checkpoint(t.run_dir, t.state, t.best.metric)
        files = t.model_files
        if self.sharded:
            shared = [best]
            if t.env.enabled:
                dist.broadcast_object_list(shared, src=0)
            if shared[0] is not None:
                sharded.load_model(t.raw_model, shared[0])
            best = None
            state = sharded.full_model_state(t.raw_model)
            files = GatheredFiles(state) if state is not None else files
        failure = None
        if t.env.is_main:
            try:
                write_final(final, t.raw_model, t.tokenizer, best, files)
            except LmtoolError as exc:
                failure = exc
            t.sink.close()
        if distributed.any_rank(failure is not None, t.device):  # also the barrier: final/ is in place
            raise failure or LmtoolError(f"rank 0 could not write {final}")
        return final
