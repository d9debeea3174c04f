"""`lmtool finetune`: labeled data + a pretrained model with a task head, trained by the launcher's engine."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch

from lmtool import console
from lmtool.config import Config
from lmtool.config.checks import global_batch
from lmtool.data.processed import Processed, open_for_finetuning
from lmtool.recipes.launch import Launched, Recipe, Setup, launch
from lmtool.validate import validate


def run_finetune(config: Config, *, overwrite: bool = False) -> Path:
    """Fine-tune `model.init_from` as the config says; return the directory of the model to use
    (final/, which holds the best validated weights when there is a validation split)."""
    return launch(config, FINETUNE, overwrite)


def _check_data(config: Config, data: Processed) -> None:
    from lmtool.model_check import check_num_labels

    # the data's label count is known now
    check_num_labels(config, list(data.manifest.get("labels") or []), data.manifest.get("problem"))


def _build(run: Launched) -> Setup:
    from lmtool.finetune.heads import freeze, layer_lr_scale
    from lmtool.tasks import make_finetune_task
    from lmtool.tasks.registry import finetune_spec

    config, env, device, data = run.config, run.env, run.device, run.data
    manifest, tokenizer, train_data, eval_data = data.manifest, data.tokenizer, data.train, data.validation
    ft = config.finetune
    spec = finetune_spec(ft.task)
    labels = list(manifest.get("labels") or [])
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
        from lmtool.finetune.lora import apply_lora
        from lmtool.recipes.lora_files import LoraFiles

        model, model_files = apply_lora(model, ft.lora), LoraFiles(ft.lora.merge)
    lr_scale = layer_lr_scale(model, ft.layer_lr_decay) if ft.layer_lr_decay is not None else None
    task = make_finetune_task(manifest, tokenizer, ft, device, data.path)
    return Setup(
        config,
        model,
        task,
        train_data,
        eval_data,
        done="fine-tuned model and tokenizer",
        sequence_length=ft.max_length,
        lr_scale=lr_scale,
        order_lengths=train_data["length"] if ft.group_by_length else None,
        model_files=model_files,
    )


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


FINETUNE = Recipe(
    open_data=open_for_finetuning,
    build=_build,
    checks=partial(validate, command="finetune"),
    check_data=_check_data,
)
