"""`lmtool finetune`: labeled data + a pretrained model with a task head + the same training engine."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import torch

from lmtool import console
from lmtool.config import Config, ConfigError
from lmtool.config.checks import global_batch
from lmtool.errors import LmtoolError
from lmtool.recipes.common import (
    open_run,
    processed_dir,
    refuse_stale,
    run_on_every_rank,
    seed_everything,
    use_fused_loss,
    write_run_report,
)
from lmtool.train import distributed
from lmtool.train.precision import enable_tf32, keep_cpu_memory, resolve_precision
from lmtool.validate import validate


def run_finetune(config: Config, *, overwrite: bool = False) -> Path:
    """Fine-tune `model.init_from` as the config says; return the directory of the model to use
    (final/, which holds the best validated weights when there is a validation split)."""
    return run_on_every_rank(config, _finetune, overwrite, checks=partial(validate, command="finetune"))


def _finetune(config: Config, env: distributed.DistEnv, device: torch.device, overwrite: bool) -> Path:
    from lmtool.finetune.heads import freeze, layer_lr_scale
    from lmtool.model_check import check_num_labels
    from lmtool.tasks import make_finetune_task
    from lmtool.tasks.registry import finetune_spec
    from lmtool.train.engine import Trainer

    processed = processed_dir(config)
    manifest, tokenizer, train_data, eval_data = load_labeled(processed, config)
    refuse_stale(processed, config, device)
    ft = config.finetune
    spec = finetune_spec(ft.task)
    labels = list(manifest.get("labels") or [])
    check_num_labels(config, labels, manifest.get("problem"))  # the data's label count is known now
    resume_from = open_run(config, env, overwrite)
    precision = resolve_precision(config.train.precision, device)
    enable_tf32(device)
    keep_cpu_memory(device)
    torch.manual_seed(config.run.seed)  # the new head's weights: the same on every rank
    model = spec.load_model(
        config.model.init_from,
        manifest.get("problem") or ft.problem,
        labels,
        ft.reinit_head,
        trust_remote_code=config.model.trust_remote_code,
        overrides=config.model.config,
    )
    train_data, eval_data = spec.prepare_rows(model, ft, train_data, eval_data)
    config = _with_eval_schedule(config, len(train_data), env.world_size, eval_data is not None)
    for name, value in spec.saved_settings(ft).items():  # e.g. how `lmtool predict` decodes QA answers
        setattr(model.config, name, value)
    freeze(model, ft.freeze)
    model_files = None
    if ft.lora is not None:
        from lmtool.finetune.lora import LoraFiles, apply_lora

        model, model_files = apply_lora(model, ft.lora), LoraFiles(ft.lora.merge)
    lr_scale = layer_lr_scale(model, ft.layer_lr_decay) if ft.layer_lr_decay is not None else None
    task = make_finetune_task(manifest, tokenizer, ft, device, processed)
    use_fused_loss(task, model.to(device), config, device, env.world_size)
    seed_everything(config.run.seed + env.rank)  # dropout differs per rank; resume restores these streams
    trainer = Trainer(
        config=config,
        model=model,
        task=task,
        tokenizer=tokenizer,
        train_data=train_data,
        eval_data=eval_data,
        run_dir=Path(config.run.output_dir),
        env=env,
        device=device,
        precision=precision,
        resume_from=resume_from,
        sequence_length=ft.max_length,
        lr_scale=lr_scale,
        order_lengths=train_data["length"] if ft.group_by_length else None,
        model_files=model_files,
    )
    final = trainer.fit()
    write_run_report(config, env)
    console.info(f"done: fine-tuned model and tokenizer in {final}")
    return final


def load_labeled(processed: Path, config: Config):
    """(manifest, tokenizer, train split, validation split or None) of a processed fine-tuning directory,
    checked against the config's task."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    try:
        manifest = json.loads((processed / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LmtoolError(
            f"{processed} has no readable manifest.json: run `lmtool preprocess` with this config first"
        ) from None
    if manifest.get("kind") != "finetune":
        raise ConfigError(
            "data.processed_dir",
            f"{processed} holds language-model data, not labeled data for fine-tuning",
            has_value=False,
            hint="point data.processed_dir elsewhere (fine-tuning data is preprocessed with the finetune: section)",
        )
    if manifest.get("task") != config.finetune.task:
        raise ConfigError(
            "finetune.task",
            f"{processed} was preprocessed for task {manifest.get('task')}",
            value=config.finetune.task,
            hint="run `lmtool preprocess --overwrite` with this config",
        )
    tokenizer = AutoTokenizer.from_pretrained(processed / "tokenizer")
    train = datasets.load_from_disk(str(processed / "train"))
    if len(train) == 0:
        raise LmtoolError(f"{processed / 'train'} holds no examples")
    validation_dir = processed / "validation"
    validation = datasets.load_from_disk(str(validation_dir)) if validation_dir.is_dir() else None
    return manifest, tokenizer, train, validation if validation is not None and len(validation) else None


def _with_eval_schedule(config: Config, n_train: int, world_size: int, has_validation: bool) -> Config:
    """finetune.eval_strategy epoch: evaluate (and keep the best model) at the end of every epoch."""
    if not has_validation:
        if config.train.final_model == "best" or config.train.keep_best:
            console.info("no validation split: final/ holds the last weights")
        train = config.train.model_copy(update={"eval_every": 0, "keep_best": False, "final_model": "last"})
        return config.model_copy(update={"train": train})
    if config.finetune.eval_strategy != "epoch":
        return config
    steps_per_epoch = math.ceil(n_train / global_batch(config.train, config.finetune.max_length, world_size))
    return config.model_copy(
        update={"train": config.train.model_copy(update={"eval_every": steps_per_epoch})}
    )
