"""How the engine reads a LoRA run's checkpoints back and writes its final/ (the merged model, which plain
transformers loads, and the adapter in final/adapter/): the glue between finetune/lora.py's peft model and
the engine's `ModelFiles`, above both, so that neither imports the other."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from lmtool.errors import LmtoolError, first_line
from lmtool.finetune.lora import ADAPTER_WEIGHTS
from lmtool.model_dir import LORA_NOTE as NOTE
from lmtool.train.model_files import ModelFiles
from lmtool.train.vocab_trim import save_final_model


class LoraFiles(ModelFiles):
    """Checkpoints hold the adapter (and head) only; final/ the merged model and final/adapter/, or with
    `merge` false the adapter and a note on how to load it."""

    def __init__(self, merge: bool):
        self.merge = merge

    def load(self, model: torch.nn.Module, path: Path) -> None:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        weights = Path(path) / ADAPTER_WEIGHTS
        if not weights.is_file():
            raise LmtoolError(
                f"checkpoint {path} has no {ADAPTER_WEIGHTS}: it was not written by a LoRA run "
                "(remove finetune.lora to resume it, or start afresh with --overwrite)"
            )
        state = load_file(weights)
        expected = set(get_peft_model_state_dict(model))
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise LmtoolError(
                f"checkpoint {path} does not match this LoRA model (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}): was it written with other finetune.lora settings?"
            )
        try:
            set_peft_model_state_dict(model, state)
        except RuntimeError as exc:  # same names, other shapes (another rank r)
            raise LmtoolError(
                f"checkpoint {path} does not match this LoRA model: {first_line(exc)}"
            ) from None

    def export(self, model: torch.nn.Module, tokenizer, best: Path | None, directory: Path) -> None:
        if best is not None:
            self.load(model, best)
        if not self.merge:
            model.save_pretrained(directory, safe_serialization=True)
            tokenizer.save_pretrained(directory)
            base = model.peft_config["default"].base_model_name_or_path
            (directory / NOTE).write_text(
                f"A LoRA adapter (with the task head) for {base}, not a whole model: load it with peft "
                "(PeftModel.from_pretrained(<the base model with its task head>, this directory)), or train with "
                "finetune.lora.merge: true to get a model plain transformers loads.\n",
                encoding="utf-8",
            )
            return
        model.save_pretrained(directory / "adapter", safe_serialization=True)
        merged = model.merge_and_unload()  # the end of the run: the model in memory is not trained further
        save_final_model(merged, tokenizer, directory)
