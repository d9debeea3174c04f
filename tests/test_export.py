"""`lmtool export`: the ONNX graph of each model kind gives PyTorch's logits (a causal LM generates the same
tokens through its key/value cache), int8 runs and reports, `predict` reads an export as it reads the
PyTorch directory, and bad input is exit 2 with one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxscript, onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the export extra (onnx, onnxscript, onnxruntime) is not installed")

from tests.conftest import assert_usage_error  # noqa: E402
from tests.eval_fixtures import run_inproc, save_causal_model, save_masked_model  # noqa: E402
from tests.finetune_fixtures import keyword_rows, save_classifier, write_jsonl  # noqa: E402

TEXTS = ["the king walks to the castle", "a dog sleeps near the river in the morning light", "queen"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def export(*args: str) -> dict:
    result = run_inproc("export", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def predict(model_dir, *texts: str) -> list[dict]:
    result = run_inproc("predict", "--model", str(model_dir), "--format", "jsonl", *texts)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    """Equal records, scores within 1e-5 (predict rounds them to 6 decimals)."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key == "scores":
                assert a[key].keys() == b[key].keys()
                assert all(abs(a[key][k] - b[key][k]) <= 1e-5 for k in a[key])
            elif key == "score":
                assert abs(a[key] - b[key]) <= 1e-5
            elif key == "entities":
                assert [(e["type"], e["start"], e["end"]) for e in a[key]] == [
                    (e["type"], e["start"], e["end"]) for e in b[key]
                ]
            else:
                assert a[key] == b[key]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny classifier and its fp32 export."""
    model = save_classifier(tmp_path_factory.mktemp("cls"), ["plain", "royal"], bias=None)
    out = tmp_path_factory.mktemp("exports") / "cls-onnx"
    return model, out, export("--model", str(model), "--out", str(out))


def test_classifier_export_matches_pytorch_and_predicts_the_same(classifier):
    model, out, report = classifier
    assert report["kind"] == "classification" and report["model_file"] == "model.onnx"
    assert report["verified"]["max_abs_diff"] <= 1e-4
    for name in ("model.onnx", "config.json", "tokenizer.json", "lmtool_export.json"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".tmp-*"))
    assert_same_records(predict(out, *TEXTS), predict(model, *TEXTS))


def test_serve_classifies_with_an_export_as_predict_does(classifier):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from starlette.testclient import TestClient

    from lmtool.serve import Limits, load_server
    from lmtool.serve.app import build_app

    _, out, _ = classifier
    http = TestClient(build_app(load_server(str(out), Limits(), None, "cpu", "fp32", 16, 5.0)))
    got = http.post("/v1/classify", json={"input": TEXTS})
    assert got.status_code == 200 and got.json()["data"] == predict(out, *TEXTS)


def test_tagger_export_matches_pytorch_and_predicts_the_same(tmp_path):
    from transformers import AutoTokenizer, BertForTokenClassification

    from lmtool.prediction.onnx_model import open_session

    model_dir = save_classifier(tmp_path / "tagger", TAGS, auto=BertForTokenClassification)
    out = tmp_path / "tagger-onnx"
    report = export("--model", str(model_dir), "--out", str(out))
    assert report["kind"] == "token_classification" and report["verified"]["max_abs_diff"] <= 1e-4
    # independently of the export's own check: a batch of 4 where the trace saw 2, padded
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok([*TEXTS, "river"], padding=True, return_tensors="np")
    feeds = {name: enc[name].astype(np.int64) for name in report["inputs"]}
    got = open_session(out / "model.onnx").run(["logits"], feeds)[0]
    with torch.no_grad():
        want = BertForTokenClassification.from_pretrained(model_dir)(
            **{k: torch.from_numpy(v) for k, v in feeds.items()}
        ).logits
    mask = enc["attention_mask"].astype(bool)
    assert np.abs(got[mask] - want.numpy()[mask]).max() <= 1e-4
    assert_same_records(predict(out, *TEXTS), predict(model_dir, *TEXTS))


def test_causal_lm_generates_pytorchs_tokens_through_its_cache_and_int8_reports(tmp_path):
    from transformers import AutoModelForCausalLM

    from lmtool.prediction.onnx_model import open_session

    model_dir = save_causal_model(tmp_path / "clm")
    out = tmp_path / "clm-onnx"
    report = export("--model", str(model_dir), "--out", str(out), "--quantize", "int8")
    assert report["key_value_cache"] and report["verified"]["cached_step"]
    assert report["verified"]["max_abs_diff"] <= 1e-4
    assert report["model_file"] == "model_quantized.onnx" and (out / "model_quantized.onnx").is_file()
    assert 0.0 <= report["quantize"]["sample_argmax_agreement"] <= 1.0
    assert "validation" not in report["quantize"]  # no run directory, no --data: samples only
    # greedy decoding: the prompt with an empty cache, then one token at a time with the graph's own cache
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = torch.tensor([[5, 17, 42, 7]])
    want = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)[0].tolist()
    session = open_session(out / "model.onnx")
    pasts = [n for n in report["inputs"] if n.startswith("past_key_values")]
    heads, head_dim = model.config.n_head, model.config.n_embd // model.config.n_head
    feeds = {n: np.zeros((1, heads, 0, head_dim), np.float32) for n in pasts}
    tokens, step = prompt[0].tolist(), prompt.numpy()
    for _ in range(6):
        n = len(tokens)
        feeds.update(input_ids=step, attention_mask=np.ones((1, n), np.int64),
                     position_ids=np.arange(n - step.shape[1], n)[None])  # fmt: skip
        logits, *present = session.run(None, feeds)
        feeds.update(zip(pasts, present, strict=True))
        tokens.append(int(logits[0, -1].argmax()))
        step = np.array([[tokens[-1]]], np.int64)
    assert tokens == want


def test_int8_reports_the_accuracy_change_on_validation_data(classifier, tmp_path):
    model, _, _ = classifier
    data = write_jsonl(tmp_path / "validation.jsonl", keyword_rows(24, seed=3))
    report = export("--model", str(model), "--out", str(tmp_path / "int8"), "--quantize", "int8",
                    "--data", str(data))  # fmt: skip
    validation = report["quantize"]["validation"]
    assert validation["samples"] == 24
    before, after = validation["pytorch_fp32"]["accuracy"], validation["onnx_int8"]["accuracy"]
    assert validation["change"]["accuracy"] == pytest.approx(after - before, abs=1e-6)
    records = predict(tmp_path / "int8", *TEXTS)  # predict runs the int8 graph
    assert [r["text"] for r in records] == TEXTS


def test_a_graph_that_differs_from_pytorch_is_exit_2_and_leaves_nothing(classifier, tmp_path, monkeypatch):
    from lmtool.export import graph, verify

    _, done, report = classifier

    def reuse(model, tokenizer, file):  # the graph exported already, without tracing again
        shutil.copy(done / "model.onnx", file)
        return graph.Graph(report["inputs"], ["logits"])

    monkeypatch.setattr(graph, "export_encoder", reuse)
    monkeypatch.setattr(verify, "ATOL", -1.0)  # no difference is small enough
    out = tmp_path / "differs"
    result = run_inproc("export", "--model", str(classifier[0]), "--out", str(out))
    assert_usage_error(result, "differs from PyTorch", "max |difference|")
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


def test_bad_input_is_exit_2_naming_the_problem(classifier, tmp_path, monkeypatch):
    model, done, _ = classifier
    cases = [
        (["--model", str(tmp_path / "nope")], "model directory not found"),
        (["--model", str(tmp_path)], "no config.json"),
        (["--model", str(save_masked_model(tmp_path / "mlm"))], "not architecture BertForMaskedLM"),
        (["--model", str(model), "--quantize", "int4"], "--quantize must be one of int8"),
        (["--model", str(model), "--format", "tflite"], "--format must be one of onnx"),
        (["--model", str(model), "--out", str(done)], "pass --overwrite"),
        (["--model", str(model), "--out", str(model)], "lmtool export did not make it"),
    ]
    for args, fragment in cases:
        assert_usage_error(run_inproc("export", *args), fragment)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    assert_usage_error(run_inproc("export", "--model", str(model)), "onnxruntime", "lmtool[export]")
