"""The files of an export, written into a (temporary) directory: the graph, checked; with int8 the
quantized graph beside it, checked for agreement; config.json and the tokenizer as save_pretrained writes
them. Returns the record kept as lmtool_export.json and printed by `lmtool export`."""

from __future__ import annotations

from pathlib import Path

import torch

from lmtool import console
from lmtool.errors import LmtoolError
from lmtool.export import graph as graphs
from lmtool.export import verify
from lmtool.export.source import Source
from lmtool.positions import max_positions
from lmtool.prediction.onnx_model import open_session

FP32_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"  # optimum's name for a quantized graph


def build(source: Source, out: Path, quantize: str | None, data: str | None) -> dict:
    model, tokenizer = source.model, source.tokenizer
    console.info(f"exporting {source.path} ({source.kind}) with torch.onnx.export (dynamo)")
    with torch.no_grad():
        if source.kind == "causal_lm":
            graph = graphs.export_causal(model, out / FP32_FILE)
        else:
            graph = graphs.export_encoder(model, tokenizer, out / FP32_FILE)
    fp32 = open_session(out / FP32_FILE)
    token_level = source.token_level
    if source.kind == "causal_lm":
        check = verify.check_causal(model, fp32, tokenizer, graph, max_positions(model.config))
    else:
        check = verify.check_encoder(model, fp32, tokenizer, graph, token_level)
    check["tolerance"] = f"|onnx - pytorch| <= {verify.ATOL} + {verify.RTOL} * |pytorch| (fp32 logits)"
    if not check.pop("ok"):
        raise LmtoolError(
            f"the ONNX graph of {source.path} differs from PyTorch: max |difference| of the logits "
            f"{check['max_abs_diff']:.3g}, over {check['tolerance']}"
        )
    console.info(f"onnxruntime matches PyTorch: max |difference| of the logits {check['max_abs_diff']:.2g}")
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if source.kind == "causal_lm" and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    record = {
        "format": "onnx",
        "kind": source.kind,
        "model_file": FP32_FILE,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}, opset {graphs.OPSET}",
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "key_value_cache": bool(graph.layers),
        "verified": check,
        "sizes_mb": {FP32_FILE: _megabytes(out / FP32_FILE)},
    }
    if quantize == "int8":
        record.update(_int8(source, out, graph, fp32, token_level, data))
    return record


def _int8(source: Source, out: Path, graph: graphs.Graph, fp32, token_level: bool, data: str | None) -> dict:
    """The int8 graph (the one predict then runs), its argmax agreement with fp32 on the samples and, when
    the validation data is known, the accuracy change."""
    from lmtool.export.quantize import compare_on_validation, quantize_int8

    console.info("quantizing to int8 (onnxruntime dynamic quantization)")
    quantize_int8(out / FP32_FILE, out / INT8_FILE)
    int8 = open_session(out / INT8_FILE)
    if source.kind == "causal_lm":
        feeds = verify.causal_feeds(source.tokenizer, graph, max_positions(source.model.config))
    else:
        feeds = verify.encoder_feeds(source.tokenizer, graph)
    result: dict = {
        "model_file": INT8_FILE,
        "quantize": {
            "type": "int8",
            "method": "onnxruntime.quantization.quantize_dynamic (MatMul, Gemm; QInt8 weights)",
            "sample_argmax_agreement": verify.argmax_agreement(fp32, int8, feeds, token_level),
        },  # fmt: skip
    }
    result["sizes_mb"] = {FP32_FILE: _megabytes(out / FP32_FILE), INT8_FILE: _megabytes(out / INT8_FILE)}
    if source.kind != "causal_lm":
        # the evaluation reads the directory's record to find the int8 graph: write a provisional one
        import json

        from lmtool.prediction.onnx_model import EXPORT_INFO

        (out / EXPORT_INFO).write_text(json.dumps({"model_file": INT8_FILE}), encoding="utf-8")
        validation = compare_on_validation(source.path, str(out), data)
        if validation is not None:
            result["quantize"]["validation"] = validation
    elif data is not None:
        console.warning(
            "--data is for classifiers and taggers: a causal LM's int8 graph is compared on samples"
        )
    return result


def _megabytes(file: Path) -> float:
    return round(file.stat().st_size / 1e6, 2)
