"""int8: onnxruntime's dynamic quantization (int8 weights of every MatMul/Gemm, activations quantized on
the fly), and what it costs in accuracy on the validation data when the model's is known.

The validation data: `--data` (a labeled file or processed directory), else the processed validation
split of the run that made the model (`runs/NAME/final` -> `runs/NAME/config.yaml`'s data.processed_dir).
Both models are scored by `lmtool evaluate`'s code (the task's metrics), so the numbers are those
`lmtool evaluate` prints for the PyTorch directory and for the exported one.
"""

from __future__ import annotations

from pathlib import Path

from lmtool import console
from lmtool.errors import LmtoolError
from lmtool.ownership import is_run_dir

OP_TYPES = ["MatMul", "Gemm"]


def quantize_int8(source: Path, target: Path) -> None:
    """`source` (an fp32 ONNX file) as `target` with int8 weights."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise LmtoolError("--quantize int8 needs onnxruntime: pip install 'lmtool[export]'") from None
    from lmtool.export.graph import quiet_logger

    with quiet_logger(None):
        quantize_dynamic(source, target, op_types_to_quantize=OP_TYPES, weight_type=QuantType.QInt8)


def validation_config(model: str, data: str | None):
    """The config `lmtool evaluate` would score `model` with, or None when no validation data is known."""
    from lmtool.config import load_config

    if data is not None:
        return load_config(None, [f"evaluate.model={model}", f"evaluate.data={data}"])
    run_dir = Path(model).expanduser().resolve().parent
    if not is_run_dir(run_dir) or not (run_dir / "config.yaml").is_file():
        return None
    try:
        config = load_config(run_dir / "config.yaml", [f"evaluate.model={model}"])
    except LmtoolError as exc:
        console.warning(f"{run_dir / 'config.yaml'} does not load ({exc}): no validation accuracy")
        return None
    split = Path(config.data.processed_dir).expanduser() / config.evaluate.split
    if not split.is_dir():
        console.info(f"the run's validation split {split} is not here: int8 compared on sample inputs only")
        return None
    return config


def compare_on_validation(model: str, exported: str, data: str | None) -> dict | None:
    """The task's metrics of the PyTorch model and of the int8 export on the validation data, and the
    change of each; None when no validation data is known."""
    from lmtool.evaluation.finetuned import evaluate_finetuned

    config = validation_config(model, data)
    if config is None:
        return None
    console.info(
        f"scoring the PyTorch model and the int8 export on {config.evaluate.data or config.data.processed_dir}"
    )
    before = evaluate_finetuned(config)
    after = evaluate_finetuned(
        config.model_copy(update={"evaluate": config.evaluate.model_copy(update={"model": exported})})
    )
    metrics = [
        k
        for k, v in before.items()
        if isinstance(v, float) and k != "loss" and isinstance(after.get(k), float)
    ]
    return {
        "data": before["data"],
        "samples": before["samples"],
        "pytorch_fp32": {k: round(before[k], 6) for k in metrics},
        "onnx_int8": {k: round(after[k], 6) for k in metrics},
        "change": {k: round(after[k] - before[k], 6) for k in metrics},
    }
