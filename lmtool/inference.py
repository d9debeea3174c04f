"""A trained model ready for inference: loaded, on its device, with the autocast context to run it in.

`lmtool evaluate` and `lmtool generate` share this so `device:` and `precision:` mean the same
in both sections as they do for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtool.runtime import Precision, resolve_device, resolve_precision


@dataclass
class Loaded:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    precision: Precision
    causal: bool


def load_for_inference(
    path: str, *, device: str, precision: str, section: str, trust_remote_code: bool = False
) -> Loaded:
    """Load `path` (model + tokenizer) in eval mode on the configured device and precision."""
    from lmtool.models import is_causal_lm, load_model

    dev = resolve_device(device, key=f"{section}.device")
    prec = resolve_precision(precision, dev, key=f"{section}.precision")
    model, tokenizer = load_model(path, trust_remote_code=trust_remote_code, key=f"{section}.model")
    model.to(dev)
    return Loaded(model, tokenizer, dev, prec, is_causal_lm(model))
