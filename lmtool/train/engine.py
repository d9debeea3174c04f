"""The training loop: read `Trainer.fit` top to bottom.

The engine owns speed and resume semantics (precision, accumulation, clipping, checkpoints,
signals, logging); the task owns batches, loss and evaluation metrics, so pretraining and
fine-tuning share this file. One optimizer step = one global batch, accumulated over micro-steps
(and processes). The loss of a step is weighted by target tokens across micro-steps and ranks, so
any split of the same global batch gives the same step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lmtool import console
from lmtool.compat import enable_activation_checkpointing
from lmtool.config import Config, ConfigError, dump_config
from lmtool.errors import LmtoolError, Preempted, TrainingStopped
from lmtool.runtime import Precision
from lmtool.train import checkpoint, distributed, failures, ranklog
from lmtool.train.best import BestTracker
from lmtool.train.data_order import LENGTH_GROUP_BATCHES, OrderedView, RankBatches
from lmtool.train.deadline import Deadline
from lmtool.train.metrics import (
    MetricsSink,
    MfuMeter,
    TrainWindow,
    eval_line,
    flops_per_token,
    memory_gb,
    peak_flops,
    train_line,
)
from lmtool.train.model_files import ModelFiles
from lmtool.train.optim import build_optimizer, build_scheduler, resolve_warmup
from lmtool.train.plan import describe, make_plan, should_compile
from lmtool.train.progress import Progress
from lmtool.train.requeue import write_marker
from lmtool.train.rundir import open_run_dir
from lmtool.train.saving import RunFiles, Saver, Trained
from lmtool.train.sharded_eval import sharded_metrics
from lmtool.train.signals import StopRequest, ignore_stop_signals
from lmtool.train.step_stats import LOSS_SUM, TARGETS, TOKENS, StepNumbers, StepStats, loss_divisor


class Trainer:
    """`sequence_length`: tokens per example for FLOPs, MFU and the fp16 loss divisor (default
    data.block_size; the maximum length for padded examples). `lr_scale`: learning-rate factor per
    parameter name (layer-wise decay). `order_lengths`: per training example, to draw each step from
    examples of similar length, sorted in megabatches of `length_group` examples (default
    LENGTH_GROUP_BATCHES global batches). `model_files`: how the model is read back on resume and written
    to final/ (default: full save_pretrained directories)."""

    def __init__(
        self,
        *,
        config: Config,
        model: torch.nn.Module,
        task,
        tokenizer,
        train_data,
        eval_data,
        run_dir: Path,
        env: distributed.DistEnv,
        device: torch.device,
        precision: Precision,
        resume_from: Path | None = None,
        sequence_length: int | None = None,
        lr_scale: Callable[[str], float] | None = None,
        order_lengths: Sequence[int] | None = None,
        length_group: int | None = None,
        model_files: ModelFiles | None = None,
    ):
        self.config, self.cfg = config, config.train
        self.task, self.tokenizer = task, tokenizer
        self.train_data, self.eval_data = train_data, eval_data
        self.run_dir, self.env, self.device, self.precision = Path(run_dir), env, device, precision
        self.resume_from = resume_from
        self.model_files = model_files or ModelFiles()
        self.plan = make_plan(config, len(train_data), env.world_size, sequence_length)
        self.state = Progress()
        self.best = BestTracker(self.cfg)
        self.keep_best = self.cfg.keep_best or self.cfg.final_model == "best"
        group = length_group or LENGTH_GROUP_BATCHES * self.plan.global_batch
        self.ordered = OrderedView(train_data, config.run.seed, order_lengths, group, self.plan.global_batch)
        self._stop_early = False
        sequence_length = sequence_length or config.data.block_size

        self.raw_model = model.to(device)
        if self.cfg.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ConfigError(
                    "train.gradient_checkpointing", f"is not supported by {type(model).__name__}", value=True
                )
            enable_activation_checkpointing(model)
        # Wrapped before the optimizer is built: fully_shard replaces the parameters by sharded ones.
        self.compiled = should_compile(self.cfg.compile, self.plan, model, device)
        self.strategy = distributed.strategy_for(env, self.cfg.distributed, precision)
        self.model = self.strategy.wrap(model, task, device, compile=self.compiled)
        self.params = list(model.parameters())
        self.optimizer = build_optimizer(model, self.cfg, device, lr_scale)
        self.skip_on_device = bool(self.optimizer.defaults.get("fused")) and not precision.needs_scaler
        self.stats = StepStats()
        self.stop_vote = distributed.StopVote(device)
        self._last_step: StepNumbers | None = None
        self.warmup = resolve_warmup(self.cfg, self.plan.total_steps)
        self.scheduler = self._schedule(0)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
        self.loss_divisor = loss_divisor(self.plan.micro_batch * sequence_length)
        self.flops_per_token = flops_per_token(model, sequence_length)
        self.mfu: MfuMeter | None = None  # rank 0's, once the run directory is open
        self.sink: MetricsSink | None = None
        self.deadline = Deadline.from_config(self.cfg.stop_before, self.cfg.deadline)
        self.saver = Saver(
            Trained(model, self.optimizer, self.scaler, self._schedule, self.plan.global_batch),
            RunFiles(self.run_dir, config, tokenizer, self.model_files, self.keep_best),
            env,
            device,
            sharded=self.strategy.sharded_checkpoints,
            deadline=self.deadline,
        )

    def _schedule(self, done_steps: int):
        """This config's learning-rate schedule, positioned after `done_steps` (on resume)."""
        return build_scheduler(
            self.optimizer, self.cfg, self.plan.total_steps, self.warmup, done_steps=done_steps
        )

    # ------------------------------------------------------------------ the loop

    def fit(self) -> Path:
        """Train until the plan's last step (or early stopping, a signal, too many bad steps); return final/."""
        if self.resume_from is not None:
            self.state, self.scheduler = self.saver.restore(self.resume_from)
        self.best.adopt(self.state)
        self._stop_early = self.best.exhausted(self.state)  # a resumed run that had stopped early
        plan, state = self.plan, self.state
        self._open_run_dir()
        if self.env.is_main:
            checkpoint.start_lineage(self.run_dir, self.resume_from)
        self.model.train()
        self.window = TrainWindow(state)
        with (
            StopRequest() as stop,
            console.progress("train", total=plan.total_steps) as bar,
        ):
            # DataLoader workers fork here, inside StopRequest: a signal before they ignore it only sets a flag.
            batches = iter(self._loader(state.samples_seen))
            bar.update(completed=state.step)
            while state.step < plan.total_steps and not self._stop_early:
                failures.whereabouts.step = state.step + 1  # named if a collective of this step hangs
                group = self.optimizer.param_groups[0]
                lr = group["lr"] / group["lr_scale"]  # the schedule's lr, before any per-layer scale
                totals, stop_votes = self._accumulate(batches, stop)
                skipped, grad_norm = self._optimizer_step(totals)
                state.step += 1
                state.samples_seen += plan.global_batch
                self.deadline.step_done()
                self.stats.record(state.step, totals, skipped, grad_norm)  # read when logging or saving
                bar.update(completed=state.step)

                if state.step % self.cfg.log_every == 0 or state.step == plan.total_steps:
                    last = self._settle()
                    record = self.window.flush(state, plan.total_steps, lr=lr, grad_norm=last.grad_norm)
                    self._log_train(record)
                if (
                    self.cfg.eval_every
                    and state.step % self.cfg.eval_every == 0
                    and state.step < plan.total_steps
                ):
                    self._evaluate()
                if self.cfg.save_every and state.step % self.cfg.save_every == 0:
                    self._save(wait=False)
                # The step in progress at the signal is saved (torchrun: the vote in _accumulate decides).
                if stop_votes or (not self.env.enabled and (stop.requested or self.deadline.near())):
                    self._save()
                    reason = stop.signal_name or ("time limit" if self.deadline.near() else "stop signal")
                    if self.env.is_main:
                        write_marker(self.run_dir, reason, state.step)
                    raise Preempted(
                        f"{reason}: saved checkpoint at step {state.step}; "
                        "rerun the same command to resume (exit code 3 = requeue)"
                    )
        self._evaluate()
        self._save()
        return self._write_final()

    def _accumulate(self, batches, stop: StopRequest) -> tuple[torch.Tensor, bool]:
        """Forward/backward over the step's micro-batches; returns the device tensor (loss sum, target tokens,
        tokens, stop votes) summed over all ranks, and whether to stop after this step. Gradients are left as
        sums of per-token losses / loss_divisor (scaled later). The stop vote is taken after the last
        backward, so a signal during this step stops after it (one step later on CUDA with several ranks:
        see distributed.StopVote)."""
        local = torch.zeros(4, dtype=distributed.accumulator_dtype(self.device), device=self.device)
        for micro in range(self.plan.accumulation):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
            last = micro == self.plan.accumulation - 1
            with self.strategy.no_sync(self.model, skip_sync=not last), self.strategy.autocast():
                loss, count = self.model(batch)
            self.scaler.scale(loss * count / self.loss_divisor).backward()
            mask = batch.get("attention_mask")
            local[LOSS_SUM] += loss.detach().to(local.dtype) * count
            local[TARGETS] += count
            local[TOKENS] += mask.sum() if mask is not None else batch["input_ids"].numel()
        if not self.env.enabled:
            return local, False  # one process decides after the update (fit)
        local[3] = float(stop.requested or self.deadline.near())
        totals = distributed.all_reduce_sum(local)
        return totals, self.stop_vote(totals[3])

    def _optimizer_step(self, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Average the summed gradients over all target tokens and clip them in one pass, step; skip the update
        if the loss or the gradient is not finite. Returns (skipped, grad norm before clipping) on the device:
        with a fused AdamW the skip is decided on the device too (its found_inf input), so the step waits
        for nothing."""
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        # DDP and FSDP averaged over ranks: undo that and loss_divisor, and divide by the global number of target tokens.
        to_mean = (self.env.world_size * self.loss_divisor / totals[TARGETS].clamp(min=1)).float()
        norm = to_mean * self.strategy.total_norm(grads)
        factor = to_mean
        if self.cfg.grad_clip > 0:  # clip_grad_norm_'s coefficient, folded into the averaging
            factor = to_mean * (self.cfg.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        self.strategy.scale_grads(grads, factor)
        skipped = ~torch.isfinite(totals[LOSS_SUM])
        if not self.precision.needs_scaler:  # with fp16 the scaler itself skips steps with inf gradients
            skipped |= ~torch.isfinite(norm)
        if self.skip_on_device:
            self.optimizer.found_inf = skipped.float()
            self.optimizer.step()
        elif not bool(skipped):  # fp16's GradScaler and the foreach AdamW decide on the host
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale:  # the scaler found inf/NaN gradients: update skipped
                self.state.scaler_skipped += 1
                console.info(
                    f"step {self.state.step + 1}: fp16 gradient overflow, update skipped, loss scale lowered"
                )
        else:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return skipped, norm

    def _settle(self) -> StepNumbers:
        """Read the steps recorded on the device into the progress counters and the log window (before a log
        line or a checkpoint); stop after train.max_nonfinite skipped updates in a row. Returns the last step's."""
        state = self.state
        rows = self.stats.read()
        for row in rows:
            state.tokens_seen += row.tokens
            self.window.add(row.loss_sum, row.targets, row.tokens)
            if not row.skipped:
                state.nonfinite_in_row = 0
                continue
            state.nonfinite_total += 1
            state.nonfinite_in_row += 1
            console.warning(
                f"step {row.step}: non-finite loss or gradient ({row.loss_sum / max(row.targets, 1):.4g}); "
                "update skipped"
            )
            if state.nonfinite_in_row >= self.cfg.max_nonfinite:
                raise TrainingStopped(
                    f"{state.nonfinite_in_row} non-finite losses in a row at step {row.step}: lower train.lr, "
                    f"use precision fp32 or check the data; the last good checkpoint is kept in {self.run_dir / checkpoint.CHECKPOINTS}"
                )
        if rows:
            self._last_step = rows[-1]
        return self._last_step

    def _save(self, wait: bool = True) -> None:
        self._settle()
        self.saver.save(self.state, self.scheduler, wait=wait)

    def _write_final(self) -> Path:
        """final/ (every rank); then rank 0 closes metrics.jsonl and the trackers, also when final/ could not
        be written (an error all ranks raise alike)."""
        try:
            final = self.saver.write_final(self.state, self.best.metric)
        except LmtoolError:
            self._close_sink()
            raise
        self._close_sink()
        return final

    def _close_sink(self) -> None:
        if self.sink is not None:  # rank 0's
            self.sink.close()

    # ------------------------------------------------------------------ data

    def _loader(self, start: int) -> DataLoader:
        sampler = RankBatches(
            start, self.plan.global_batch, self.plan.micro_batch, self.env.world_size, self.env.rank
        )
        return DataLoader(
            self.ordered,
            batch_sampler=sampler,
            collate_fn=self.task.collate,
            num_workers=self.cfg.num_workers,
            worker_init_fn=ignore_stop_signals if self.cfg.num_workers else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # Its own generator, so that shuffling leaves the global RNG (dropout) untouched.
            generator=torch.Generator().manual_seed(self.config.run.seed),
        )

    # ------------------------------------------------------------------ eval, logging, saving

    def _evaluate(self) -> None:
        """Validation metrics (every rank evaluates its share); all ranks then learn whether it failed, found
        a new best or ran out of patience (rank 0 decides). With keep_best a new best is saved at once, so
        the best checkpoint exists whether or not the eval falls on a save step."""
        failure, improved = None, False
        try:
            improved = self._validate()
        except LmtoolError as exc:
            failure = exc
        exhausted = self.env.is_main and self.best.exhausted(self.state)
        flags = torch.tensor(
            [failure is not None, improved, exhausted], dtype=torch.float32, device=self.device
        )
        failed, improved, exhausted = (v > 0 for v in distributed.all_reduce_sum(flags).tolist())
        if failed:
            raise failure or LmtoolError(f"another rank could not evaluate step {self.state.step}")
        if self.keep_best and improved:
            self._save(wait=False)
        if exhausted and not self._stop_early and self.state.step < self.plan.total_steps:
            self.best.announce_stop(self.state)
        self._stop_early = exhausted

    def _validate(self) -> bool:
        """Evaluate; rank 0 logs and returns whether metric_for_best is a new best. A step is evaluated once: a
        run killed after its final checkpoint but before final/ resumes with that eval already in the metrics."""
        state = self.state
        if self.eval_data is None or len(self.eval_data) == 0:
            return False
        if distributed.any_rank(self.env.is_main and self.sink.evaluated(state.step), self.device):
            return False
        started = time.perf_counter()
        metrics = sharded_metrics(
            self.raw_model, self.task, self.eval_data, self.cfg.batch_size, self.cfg.eval_batches,
            self.env, self.device, self.strategy.autocast,
        )  # fmt: skip
        if metrics is None:  # not rank 0
            return False
        # nested values (per class) too; eval_s: the report's "where the time went"
        eval_s = round(time.perf_counter() - started, 3)
        self.sink.write({"type": "eval", "step": state.step, **metrics, "eval_s": eval_s})
        console.info(eval_line(metrics, state.step))
        return self.best.update(state, metrics)

    def _log_train(self, record: dict) -> None:
        if self.mfu and record["tokens_per_s"]:
            record["mfu"] = self.mfu(record["tokens_per_s"])
        record["memory_gb"] = round(memory_gb(self.device), 3)
        if self.env.is_main:
            self.sink.write(record)
            console.info(train_line(record, self.plan.total_steps))

    def _open_run_dir(self) -> None:
        if self.env.is_main:
            resumed_step = self.state.step if self.resume_from is not None else None
            self.sink = open_run_dir(
                self.run_dir, dump_config(self.config), resumed_step, self.config.logging
            )
            dtype = self.precision.compute_dtype
            peak = peak_flops(self.device, dtype)
            if peak:
                self.mfu = MfuMeter(self.flops_per_token, peak, self.env.world_size, self.device, dtype)
            console.info(
                describe(
                    self.plan, self.raw_model, self.env.world_size, self.device, self.precision, self.compiled
                )
            )
        distributed.barrier()
        ranklog.open_rank_log(self.run_dir, self.env)  # the directory is lmtool's and in place now
