"""The training loop: read `Trainer.fit` top to bottom.

The engine owns speed and resume semantics (precision, accumulation, clipping, checkpoints,
signals, logging); the task owns batches, loss and evaluation metrics, so pretraining and
fine-tuning share this file. One optimizer step = one global batch, accumulated over micro-steps
(and processes). The loss of a step is weighted by target tokens across micro-steps and ranks, so
any split of the same global batch gives the same step.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lmtool import __version__, console
from lmtool.config import Config, ConfigError, dump_config
from lmtool.errors import LmtoolError, Preempted, TrainingStopped
from lmtool.ownership import mark_run_dir
from lmtool.train import checkpoint, distributed
from lmtool.train.data_order import OrderedView, RankBatches
from lmtool.train.metrics import (
    MetricsSink,
    TrainWindow,
    flops_per_token,
    format_duration,
    memory_gb,
    peak_flops,
    remeasure_cpu_peak,
    truncate_metrics,
)
from lmtool.train.optim import build_optimizer, build_scheduler
from lmtool.train.precision import Precision
from lmtool.train.signals import StopRequest, ignore_stop_signals

# train.compile: auto compiles GPU runs at least this long (compiling costs ~30-60 s)
COMPILE_MIN_STEPS = 1000


@dataclass(frozen=True)
class Plan:
    """Batch geometry and length of the run, fixed before the first step."""

    micro_batch: int
    accumulation: int
    global_batch: int
    total_steps: int
    tokens_per_step: int


@dataclass
class Progress:
    """What trainer_state.pt records besides optimizer, scheduler, scaler and RNG states."""

    step: int = 0
    samples_seen: int = 0  # data position: global samples consumed
    tokens_seen: int = 0
    best_loss: float | None = None
    best_step: int | None = None
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0


def make_plan(config: Config, n_train: int, world_size: int) -> Plan:
    """Turn batch and stopping options into micro-batch, accumulation and total steps (exit 2 if inconsistent)."""
    cfg, block = config.train, config.data.block_size
    per_micro = cfg.batch_size * world_size
    if cfg.global_batch_tokens is not None:
        sequences = max(round(cfg.global_batch_tokens / block), 1)
        global_batch = max(round(sequences / per_micro), 1) * per_micro
    else:
        global_batch = cfg.global_batch_size or per_micro
        if global_batch % per_micro:
            raise ConfigError(
                "train.global_batch_size",
                f"must be a multiple of batch_size x processes = {cfg.batch_size} x {world_size} = {per_micro}",
                value=global_batch,
            )
    if n_train == 0:
        raise LmtoolError(
            f"the training split in {config.data.processed_dir} is empty: add data or lower data.block_size"
        )
    tokens_per_step = global_batch * block
    limits = []
    if cfg.max_steps is not None:
        limits.append(cfg.max_steps)
    if cfg.max_tokens is not None:
        limits.append(math.ceil(cfg.max_tokens / tokens_per_step))
    if cfg.epochs is not None or not limits:
        limits.append(max(math.ceil((cfg.epochs or 1.0) * n_train / global_batch), 1))
    return Plan(cfg.batch_size, global_batch // per_micro, global_batch, min(limits), tokens_per_step)


def should_compile(setting: bool | str, plan: Plan, model: torch.nn.Module, device: torch.device) -> bool:
    """auto: only transformer runs on CUDA of at least COMPILE_MIN_STEPS steps, where the compile time pays
    off. On CPU the step is matmul-bound: compiling a 14M-parameter GPT-2 took 35-55 s on 2 cores and gained
    0-6% per step over eager with the fused GELU."""
    if setting != "auto":
        return bool(setting)
    has_attention = getattr(model.config, "num_attention_heads", None) is not None
    return device.type == "cuda" and has_attention and plan.total_steps >= COMPILE_MIN_STEPS


class Trainer:
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
    ):
        self.config, self.cfg = config, config.train
        self.task, self.tokenizer = task, tokenizer
        self.train_data, self.eval_data = train_data, eval_data
        self.run_dir, self.env, self.device, self.precision = Path(run_dir), env, device, precision
        self.resume_from = resume_from
        self.plan = make_plan(config, len(train_data), env.world_size)
        self.state = Progress()

        self.raw_model = model.to(device)
        if self.cfg.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ConfigError(
                    "train.gradient_checkpointing", f"is not supported by {type(model).__name__}", value=True
                )
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.params = list(model.parameters())
        self.optimizer = build_optimizer(model, self.cfg, device)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, self.plan.total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
        self.compiled = should_compile(self.cfg.compile, self.plan, model, device)
        self.model = torch.compile(model) if self.compiled else model
        self.strategy = distributed.strategy_for(env)
        self.model = self.strategy.wrap(self.model, device)
        self.flops_per_token = flops_per_token(model, config.data.block_size)
        self.peak: float | None = None
        self._remeasure_after = 0.0  # monotonic time before which the CPU peak is not measured again
        self.sink: MetricsSink | None = None
        self._saved_step: int | None = None

    # ------------------------------------------------------------------ the loop

    def fit(self) -> Path:
        """Train until the plan's last step (or a signal, or too many bad steps); return final/."""
        if self.resume_from is not None:
            self._restore(self.resume_from)
        plan, state = self.plan, self.state
        self._open_run_dir()
        self._announce()
        self.model.train()
        window = TrainWindow(state)
        with (
            StopRequest() as stop,
            console.progress("train", total=plan.total_steps, extra="{task.fields[status]}") as bar,
        ):
            # DataLoader workers fork here, inside StopRequest: a signal before they ignore it only sets a flag.
            batches = iter(self._loader(state.samples_seen))
            bar.update(completed=state.step)
            while state.step < plan.total_steps:
                lr = self.optimizer.param_groups[0]["lr"]
                loss_sum, targets, tokens, stop_votes = self._accumulate(batches, stop)
                grad_norm = self._optimizer_step(loss_sum / max(targets, 1), targets)
                state.step += 1
                state.samples_seen += plan.global_batch
                state.tokens_seen += tokens
                window.add(loss_sum, targets, tokens)
                bar.update(completed=state.step)

                if state.step % self.cfg.log_every == 0 or state.step == plan.total_steps:
                    record = window.flush(state, plan.total_steps, lr=lr, grad_norm=grad_norm)
                    self._log_train(record, bar)
                if (
                    self.cfg.eval_every
                    and state.step % self.cfg.eval_every == 0
                    and state.step < plan.total_steps
                ):
                    self._evaluate()
                if self.cfg.save_every and state.step % self.cfg.save_every == 0:
                    self._save()
                # The step in progress at the signal is saved (torchrun: the vote in _accumulate decides).
                if stop_votes or (stop.requested and not self.env.enabled):
                    self._save()
                    raise Preempted(
                        f"{stop.signal_name or 'stop signal'}: saved checkpoint at step {state.step}; "
                        "rerun the same command to resume (exit code 3 = requeue)"
                    )
        self._evaluate()
        self._save()
        return self._write_final()

    def _accumulate(self, batches, stop: StopRequest) -> tuple[float, int, int, bool]:
        """Forward/backward over the step's micro-batches; returns (loss sum, target tokens, tokens, stop vote)
        summed over all ranks. Gradients are left as sums of per-token losses (scaled later). The stop vote is
        read after the last backward, so a signal during this step stops after it."""
        local = torch.zeros(4, dtype=torch.float64, device=self.device)
        for micro in range(self.plan.accumulation):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
            last = micro == self.plan.accumulation - 1
            with self.strategy.no_sync(self.model, skip_sync=not last), self.precision.autocast():
                loss, count = self.task.loss(self.model, batch)
            self.scaler.scale(loss * count).backward()
            mask = batch.get("attention_mask")
            tokens = mask.sum() if mask is not None else batch["input_ids"].numel()
            local[0] += loss.detach().double() * count
            local[1] += count
            local[2] += tokens
        local[3] = float(stop.requested)
        total = distributed.all_reduce_sum(local).tolist()
        return total[0], int(total[1]), int(total[2]), total[3] > 0

    def _optimizer_step(self, step_loss: float, targets: int) -> float:
        """Average the summed gradients over all target tokens, clip, step; skip the update if non-finite."""
        state = self.state
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        # DDP averaged over ranks; undo that and divide by the global number of target tokens.
        torch._foreach_mul_(grads, self.env.world_size / max(targets, 1))
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        else:
            norm = torch.nn.utils.get_total_norm(grads)
        grad_norm = float(norm)
        finite = math.isfinite(step_loss) and (math.isfinite(grad_norm) or self.precision.needs_scaler)
        if finite:
            self.scaler.step(self.optimizer)  # with fp16, the scaler itself skips steps with inf gradients
            state.nonfinite_in_row = 0
        else:
            state.nonfinite_total += 1
            state.nonfinite_in_row += 1
            console.warning(
                f"step {state.step + 1}: non-finite loss or gradient ({step_loss:.4g}); update skipped"
            )
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if state.nonfinite_in_row >= self.cfg.max_nonfinite:
            raise TrainingStopped(
                f"{state.nonfinite_in_row} non-finite losses in a row at step {state.step + 1}: lower train.lr, "
                f"use precision fp32 or check the data; the last good checkpoint is kept in {self.run_dir / checkpoint.CHECKPOINTS}"
            )
        return grad_norm

    # ------------------------------------------------------------------ data

    def _loader(self, start: int) -> DataLoader:
        sampler = RankBatches(
            start, self.plan.global_batch, self.plan.micro_batch, self.env.world_size, self.env.rank
        )
        return DataLoader(
            OrderedView(self.train_data, self.config.run.seed),
            batch_sampler=sampler,
            collate_fn=self.task.collate,
            num_workers=self.cfg.num_workers,
            worker_init_fn=ignore_stop_signals if self.cfg.num_workers else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # Its own generator, so that shuffling leaves the global RNG (dropout) untouched.
            generator=torch.Generator().manual_seed(self.config.run.seed),
        )

    def _eval_batches(self):
        size = self.cfg.batch_size
        limit = (
            len(self.eval_data)
            if self.cfg.eval_batches is None
            else min(len(self.eval_data), self.cfg.eval_batches * size)
        )
        for first in range(0, limit, size):
            indices = list(range(first, min(first + size, limit)))
            columns = self.eval_data[indices]
            rows = [
                {**{k: v[i] for k, v in columns.items()}, "sample_id": index}
                for i, index in enumerate(indices)
            ]
            yield {k: v.to(self.device) for k, v in self.task.collate(rows).items()}

    # ------------------------------------------------------------------ eval, logging, saving

    def _evaluate(self) -> None:
        """Validation metrics on rank 0 (the other ranks wait at their next collective)."""
        if not self.env.is_main or self.eval_data is None or len(self.eval_data) == 0:
            return
        evaluator = self.task.evaluator()
        self.raw_model.eval()
        with torch.no_grad(), self.precision.autocast():
            for batch in self._eval_batches():
                evaluator.update(self.raw_model, batch)
        self.raw_model.train()
        metrics = evaluator.compute()
        state = self.state
        if state.best_loss is None or metrics["loss"] < state.best_loss:
            state.best_loss, state.best_step = metrics["loss"], state.step
        self.sink.write({"type": "eval", "step": state.step, **metrics})
        shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "tokens")
        console.info(f"eval step {state.step}: {shown}")

    def _log_train(self, record: dict, bar) -> None:
        if self.peak and record["tokens_per_s"]:
            record["mfu"] = record["tokens_per_s"] * self.flops_per_token / self.peak
            if record["mfu"] > 1.0 and self.device.type == "cpu" and time.monotonic() > self._remeasure_after:
                self.peak = remeasure_cpu_peak(self.precision.compute_dtype)
                self._remeasure_after = time.monotonic() + 60.0  # at most once a minute on a busy machine
                record["mfu"] = record["tokens_per_s"] * self.flops_per_token / self.peak
        record["memory_gb"] = round(memory_gb(self.device), 3)
        if self.env.is_main:
            self.sink.write(record)
            line = (
                f"step {record['step']}/{self.plan.total_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
                f"grad {record['grad_norm']:.3g} | {record['tokens_per_s']:,.0f} tok/s"
            )
            if "mfu" in record:
                line += f" | MFU {record['mfu']:.1%}"
            line += f" | mem {record['memory_gb']:.2f} GB | ETA {format_duration(record['eta_s'])}"
            bar.update(status=line)
            console.info(line)

    def _save(self) -> None:
        """Checkpoint (all ranks gather their RNG states; rank 0 writes), then apply retention."""
        state = self.state
        if self._saved_step == state.step:
            return
        self._saved_step = state.step
        rng = checkpoint.rng_state()
        if self.env.enabled:
            per_rank = [None] * self.env.world_size
            torch.distributed.all_gather_object(per_rank, rng)
        else:
            per_rank = [rng]
        if not self.env.is_main:
            return
        payload = {
            "progress": asdict(state),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": per_rank,
            "world_size": self.env.world_size,
            "global_batch": self.plan.global_batch,
            "lmtool_version": __version__,
        }
        checkpoint.save_checkpoint(
            self.run_dir, state.step, self.raw_model, self.tokenizer, dump_config(self.config), payload
        )
        best = state.best_step if self.cfg.keep_best else None
        checkpoint.prune_checkpoints(self.run_dir, self.cfg.keep_last, best)

    def _restore(self, path: Path) -> None:
        checkpoint.load_model_weights(self.raw_model, path)
        saved = checkpoint.load_trainer_state(path)
        self.state = Progress(**saved["progress"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        rng = saved["rng"]
        if len(rng) == self.env.world_size:
            checkpoint.set_rng_state(rng[self.env.rank])
        else:
            checkpoint.set_rng_state(rng[0])
            torch.manual_seed(self.config.run.seed + self.env.rank + 1_000_003 * self.state.step)
            console.warning(
                f"resuming on {self.env.world_size} processes (saved on {len(rng)}): dropout streams reseeded"
            )
        if saved["global_batch"] != self.plan.global_batch:
            console.warning(
                f"global batch changed from {saved['global_batch']} to {self.plan.global_batch} sequences on resume"
            )
        console.info(
            f"resuming from {path} (step {self.state.step}, {self.state.samples_seen:,} samples seen)"
        )

    def _open_run_dir(self) -> None:
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            mark_run_dir(self.run_dir)
            (self.run_dir / "config.yaml").write_text(dump_config(self.config), encoding="utf-8")
            metrics = self.run_dir / "metrics.jsonl"
            if self.resume_from is not None:
                truncate_metrics(metrics, self.state.step)
            elif metrics.exists():
                metrics.unlink()
            tensorboard = self.run_dir / "tensorboard" if self.config.logging.tensorboard else None
            self.sink = MetricsSink(metrics, tensorboard)
            self.peak = peak_flops(self.device, self.precision.compute_dtype)
        distributed.barrier()

    def _announce(self) -> None:
        plan = self.plan
        params = sum(p.numel() for p in self.raw_model.parameters())
        console.info(
            f"training {type(self.raw_model).__name__} ({params / 1e6:.2f}M parameters) on {self.env.world_size} x {self.device.type}, "
            f"precision {self.precision.name}, compile {'on' if self.compiled else 'off'}: {plan.total_steps} steps of "
            f"{plan.global_batch} sequences ({plan.tokens_per_step:,} tokens; {plan.accumulation} micro-step(s) of "
            f"{plan.micro_batch} per process)"
        )

    def _write_final(self) -> Path:
        """final/: the trained model and tokenizer as a plain save_pretrained directory (atomic rename)."""
        final = self.run_dir / "final"
        if self.env.is_main:
            tmp = self.run_dir / ".tmp-final"
            shutil.rmtree(tmp, ignore_errors=True)
            self.raw_model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            self.sink.close()
        distributed.barrier()
        return final
