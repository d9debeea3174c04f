"""Hints for options lmtool does not have: a Trainer-style flag (`--max-steps 10`) names the `--set` key it
meant, and a global option after the command (`config validate c.yaml --quiet`) says where it goes."""

from __future__ import annotations

from typing import Any

from lmtool.cli.commands import COMMANDS
from lmtool.cli.options import SET

# Hugging Face Trainer / example-script names whose lmtool key has another name.
_TRAINER_NAMES = {
    "learning_rate": "train.lr",
    "per_device_train_batch_size": "train.batch_size",
    "train_batch_size": "train.batch_size",
    "num_train_epochs": "train.epochs",
    "logging_steps": "train.log_every",
    "save_steps": "train.save_every",
    "eval_steps": "train.eval_every",
    "save_total_limit": "train.keep_last",
    "max_grad_norm": "train.grad_clip",
    "lr_scheduler_type": "train.schedule",
    "model_name_or_path": "model.init_from",
    "resume_from_checkpoint": "train.resume",
    "bf16": "train.precision",
    "fp16": "train.precision",
}


def unknown_option_message(option: str, ctx: Any, argv: list[str]) -> str | None:
    """The error for `option`, which the command in `ctx` lacks, when there is a better hint than click's."""
    root = ctx.find_root()
    if ctx is not root and any(option in p.opts + p.secondary_opts for p in root.command.params):
        after = ctx.command_path.split(" ", 1)[1]
        return (
            f"{option} is a global option: put it before the command "
            f"(`{root.command_path} {option} {after} ...`)"
        )
    if not any(param.name == SET.name for param in ctx.command.params):
        return None
    keys = _keys_for(option.lstrip("-").replace("-", "_"), ctx.info_name)
    if not keys:
        return None
    value = _value_after(option, argv)
    if keys == ["train.precision"]:  # Trainer's --bf16 / --fp16 switches
        value = option.lstrip("-")
    meant = " or ".join(f"`--set {key}={value}`" for key in keys)
    return f"No such option: {option}; did you mean {meant}?"


def _keys_for(name: str, command: str | None) -> list[str]:
    """The config keys named `name` (or its Trainer alias), the command's own section first, at most 3."""
    from lmtool.config.loader import settable_keys

    if name in _TRAINER_NAMES:
        return [_TRAINER_NAMES[name]]
    keys = [key for key in settable_keys() if key.rsplit(".", 1)[-1] == name]
    section = next((row.section for row in COMMANDS if row.name == command), None)
    own = [key for key in keys if key.split(".", 1)[0] == section]
    return (own or keys)[:3]


def _value_after(option: str, argv: list[str]) -> str:
    """The value the user gave the option (`--max-steps 10` or `--max-steps=10`), VALUE when none."""
    for index, arg in enumerate(argv):
        if arg.startswith(f"{option}="):
            return arg.split("=", 1)[1]
        if arg == option and index + 1 < len(argv) and not argv[index + 1].startswith("-"):
            return argv[index + 1]
    return "VALUE"
