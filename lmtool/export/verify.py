"""The exported graph checked against PyTorch on sample inputs of another batch size and length than the
trace's (so the dynamic axes are exercised), padding included.

fp32: every logit within ATOL + RTOL x |PyTorch's| (np.allclose's rule), for causal LMs both for the
prompt (empty cache) and for one generated token fed the graph's own `present` cache. int8: the share of
positions whose argmax agrees with the fp32 graph's (quantization moves logits by more than a tolerance).
"""

from __future__ import annotations

import numpy as np
import torch

from lmtool.export.graph import SAMPLE_TEXTS, Graph

ATOL = 1e-4
RTOL = 1e-4


def encoder_feeds(tokenizer, graph: Graph) -> dict[str, np.ndarray]:
    """Three texts padded to the longest: a batch of 3 where the trace saw 2."""
    enc = tokenizer(SAMPLE_TEXTS, padding=True, truncation=True, max_length=64, return_tensors="np")
    return {name: enc[name].astype(np.int64) for name in graph.inputs}


def causal_feeds(tokenizer, graph: Graph, positions: int | None) -> dict[str, np.ndarray]:
    """The prompt step: two rows, the second left-padded by 2; position ids count real tokens only."""
    ids = tokenizer(SAMPLE_TEXTS[0])["input_ids"][: min(12, positions or 12)]
    n = len(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = np.array([ids, [pad, pad, *ids[2:]]], dtype=np.int64)
    mask = np.array([[1] * n, [0, 0] + [1] * (n - 2)], dtype=np.int64)
    feeds = {"input_ids": input_ids, "attention_mask": mask}
    if "position_ids" in graph.inputs:
        feeds["position_ids"] = np.maximum(mask.cumsum(-1) - 1, 0)
        heads, head_dim = graph.cache_shape
        for name in graph.inputs[3:]:
            feeds[name] = np.zeros((2, heads, 0, head_dim), dtype=np.float32)
    return feeds


def torch_logits(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items() if not k.startswith("past_key_values")}
    with torch.no_grad():
        return model(**inputs).logits.float().numpy()


def worst(got: np.ndarray, want: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, bool]:
    """(max abs difference, within tolerance) over the positions `mask` keeps (all when None)."""
    if mask is not None and got.ndim == 3:
        got, want = got[mask.astype(bool)], want[mask.astype(bool)]
    diff = np.abs(got - want)
    return float(diff.max()), bool(np.all(diff <= ATOL + RTOL * np.abs(want)))


def check_encoder(model, session, tokenizer, graph: Graph, token_level: bool) -> dict:
    feeds = encoder_feeds(tokenizer, graph)
    got = session.run(["logits"], feeds)[0]
    diff, ok = worst(got, torch_logits(model, feeds), feeds["attention_mask"] if token_level else None)
    return {"max_abs_diff": diff, "ok": ok, "samples": len(SAMPLE_TEXTS)}


def check_causal(model, session, tokenizer, graph: Graph, positions: int | None) -> dict:
    """The prompt step, then (with a cache) one more token fed the graph's own cache."""
    feeds = causal_feeds(tokenizer, graph, positions)
    out = session.run(None, feeds)
    want = torch_logits(model, feeds)
    diff, ok = worst(out[0], want, feeds["attention_mask"])
    result = {"max_abs_diff": diff, "ok": ok, "samples": 2}
    if "position_ids" in graph.inputs:
        step = _next_step(feeds, want, graph, out[1:])
        got = session.run(["logits"], step)[0][:, -1]
        full = {k: v for k, v in feeds.items() if not k.startswith("past_key_values")}
        full["input_ids"] = np.concatenate([feeds["input_ids"], step["input_ids"]], axis=1)
        full["attention_mask"] = step["attention_mask"]
        full["position_ids"] = np.concatenate([feeds["position_ids"], step["position_ids"]], axis=1)
        step_diff, step_ok = worst(got, torch_logits(model, full)[:, -1])
        result.update(max_abs_diff=max(diff, step_diff), ok=ok and step_ok, cached_step=True)
    return result


def _next_step(feeds: dict, logits: np.ndarray, graph: Graph, present: list[np.ndarray]) -> dict:
    """One generated token per row (PyTorch's argmax) with the cache the prompt step returned."""
    token = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
    mask = np.concatenate([feeds["attention_mask"], np.ones_like(token)], axis=1)
    step = {"input_ids": token, "attention_mask": mask, "position_ids": feeds["position_ids"][:, -1:] + 1}
    step.update(zip(graph.inputs[3:], present, strict=True))
    return step


def argmax_agreement(fp32, int8, feeds: dict[str, np.ndarray], token_level: bool) -> float:
    """Share of rows (classifiers) or real tokens (taggers, causal LMs) whose argmax is the same."""
    a = fp32.run(["logits"], feeds)[0].argmax(-1)
    b = int8.run(["logits"], feeds)[0].argmax(-1)
    same = a == b
    if token_level:
        same = same[feeds["attention_mask"].astype(bool)]
    return round(float(same.mean()), 4)
