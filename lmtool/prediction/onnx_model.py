"""A model directory that `lmtool export` wrote (model.onnx, config.json, tokenizer), run by onnxruntime
behind the call a PyTorch model answers: `model(input_ids=..., attention_mask=...).logits`.

So `predict`, `evaluate` and `serve` read an exported classifier or tagger through the same code as the
PyTorch one; only the forward pass differs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmtool.errors import LmtoolError

EXPORT_INFO = "lmtool_export.json"  # written by `lmtool export`: what the directory holds


@dataclass
class OnnxOutput:
    logits: torch.Tensor


def is_export_dir(path: str | Path) -> bool:
    return os.path.isfile(os.path.join(path, EXPORT_INFO))


def read_export_info(path: str | Path) -> dict:
    """The export's record: exit 2 naming the file when it is not readable."""
    file = Path(path) / EXPORT_INFO
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LmtoolError(f"{file} is not readable JSON: {exc}") from None
    if not isinstance(info, dict) or not isinstance(info.get("model_file"), str):
        raise LmtoolError(f"{file} names no model_file: export the model again with `lmtool export`")
    return info


def require_onnxruntime():
    """onnxruntime, or exit 2 naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise LmtoolError(
            "onnxruntime is not installed: pip install 'lmtool[export]' (runs exported ONNX models)"
        ) from None
    return onnxruntime


def open_session(file: str | Path, threads: int | None = None):
    """An onnxruntime CPU session over `file` (its weights file beside it, if any)."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are no news
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LmtoolError(f"onnxruntime cannot load {file}: {first}") from None


class OnnxModel:
    """onnxruntime behind a PyTorch-like forward: named int64 inputs in, fp32 `logits` out (CPU)."""

    def __init__(self, session, config, path: str) -> None:
        self.session = session
        self.config = config
        self.input_names = [i.name for i in session.get_inputs()]
        self.name_or_path = path  # where the tokenizer is, as for a PyTorch model

    def __call__(self, **inputs: torch.Tensor) -> OnnxOutput:
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None and name == "token_type_ids":  # the graph takes it, the caller had none
                value = torch.zeros_like(inputs["input_ids"])
            if value is None:
                raise LmtoolError(f"the exported model needs the input {name!r}, which was not given")
            feed[name] = np.ascontiguousarray(value.detach().cpu().numpy().astype(np.int64))
        logits = self.session.run(["logits"], feed)[0]
        return OnnxOutput(torch.from_numpy(logits))

    def to(self, device) -> OnnxModel:
        return self

    def eval(self) -> OnnxModel:
        return self


def load_onnx_model(path: str, config) -> OnnxModel:
    """The model file the export recorded, in an onnxruntime session."""
    info = read_export_info(path)
    file = Path(path) / info["model_file"]
    if not file.is_file():
        raise LmtoolError(f"{path} lacks {info['model_file']}, the model its {EXPORT_INFO} names")
    return OnnxModel(open_session(file), config, path)
