"""`lmtool export`: a model directory as ONNX (model.onnx + config.json + tokenizer files, optimum's
layout), checked against PyTorch before it is kept, optionally quantized to int8.

The directory is written under a temporary name and swapped in whole (lmtool.train.atomic), and it
replaces only a directory that `lmtool export` made (its lmtool_export.json) or an empty one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lmtool import __version__, console
from lmtool.errors import LmtoolError
from lmtool.prediction.onnx_model import EXPORT_INFO, is_export_dir

FORMATS = ("onnx",)
QUANTIZE = ("int8",)


def run_export(model: str, *, fmt: str = "onnx", quantize: str | None = None, out: str | None = None,
               data: str | None = None, overwrite: bool = False) -> dict:  # fmt: skip
    """Export `model` into `out` (default: MODEL-onnx beside it) and return the report (sizes, the check
    against PyTorch, int8's agreement and accuracy change)."""
    if fmt not in FORMATS:
        raise LmtoolError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if quantize is not None and quantize not in QUANTIZE:
        raise LmtoolError(f"--quantize must be one of {', '.join(QUANTIZE)} (got {quantize!r})")
    _require_packages()
    from lmtool.export.source import load_source

    here = Path(model).expanduser().resolve()
    target = Path(out).expanduser() if out else here.with_name(f"{here.name}-onnx")
    _check_target(target, model, overwrite)
    source = load_source(model)
    started = time.perf_counter()
    report: dict = {}

    def write(tmp: Path) -> None:
        from lmtool.export.build import build

        report.update(build(source, tmp, quantize, data))
        (tmp / EXPORT_INFO).write_text(
            json.dumps({"lmtool": __version__, "source": str(Path(model).resolve()), **report}, indent=2)
            + "\n",
            encoding="utf-8",
        )

    from lmtool.train.atomic import write_dir

    write_dir(target.with_name(f".tmp-{target.name}"), target, write, "the ONNX export")
    console.info(f"exported {model} to {target} in {time.perf_counter() - started:.1f}s")
    return {"out": str(target), **report}


def _require_packages() -> None:
    """onnx, onnxscript (the dynamo exporter's) and onnxruntime (the check), or exit 2 naming the extra."""
    import importlib.util

    missing = [n for n in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(n) is None]
    if missing:
        raise LmtoolError(f"lmtool export needs {', '.join(missing)}: pip install 'lmtool[export]'")


def _check_target(target: Path, model: str, overwrite: bool) -> None:
    """The output may be new, empty, or (with --overwrite) an earlier export; never the model or its parent."""
    from lmtool.ownership import check_removable, is_empty_dir

    if target.exists() and not target.is_dir():
        raise LmtoolError(f"--out {target} is a file, not a directory")
    if not target.exists() or is_empty_dir(target):
        check_removable(target, "--out", {"--model": model})
        return
    if not is_export_dir(target):
        raise LmtoolError(
            f"--out {target} exists and lmtool export did not make it (no {EXPORT_INFO}): choose another --out"
        )
    if not overwrite:
        raise LmtoolError(f"--out {target} holds an earlier export: pass --overwrite to replace it")
    check_removable(target, "--out", {"--model": model})
