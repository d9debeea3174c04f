"""`lmtool evaluate`: score a trained model on held-out text; one JSON object as the result.

Causal LMs: sliding-window perplexity and bits per byte. Masked LMs: masked-token loss,
perplexity and accuracy on a fixed-seed mask, optionally pseudo-perplexity. Fine-tuned classifiers and
taggers: their task's metrics (evaluation/finetuned.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lmtool import console
from lmtool.config import Config, EvaluateConfig
from lmtool.errors import ConfigError, LmtoolError
from lmtool.evaluation.data import EvalData, load_data
from lmtool.inference import Loaded, load_for_inference


def run_evaluate(config: Config) -> dict:
    """Evaluate `evaluate.model` on `evaluate.data`, write the result JSON and return it."""
    from lmtool.evaluation.finetuned import evaluate_finetuned, finetuned_task

    cfg = config.evaluate
    started = time.perf_counter()
    if finetuned_task(cfg.model) is not None:
        result = evaluate_finetuned(config)
        result["seconds"] = round(time.perf_counter() - started, 3)
        _write(result, cfg)
        return result
    loaded = load_for_inference(cfg.model, device=cfg.device, precision=cfg.precision, section="evaluate",
                                trust_remote_code=cfg.trust_remote_code)  # fmt: skip
    data = load_data(cfg, config.data.processed_dir, loaded.tokenizer, loaded.causal)
    result = {"model": cfg.model, "data": data.label, "objective": "clm" if loaded.causal else "mlm"}
    if loaded.causal:
        result.update(_causal(loaded, data, cfg, config.data.block_size))
    else:
        result.update(_masked(loaded, data, cfg))
    result["seconds"] = round(time.perf_counter() - started, 3)
    _write(result, cfg)
    return result


def window_and_stride(
    cfg: EvaluateConfig, loaded: Loaded, data: EvalData, block_size: int
) -> tuple[int, int]:
    """The window is --max-length, else the context the model was trained on (recorded with it; for other
    models, all their positions), else (models without positions) the block size."""
    from lmtool.positions import max_positions, trained_context

    context = max_positions(loaded.model.config)
    if cfg.max_length is not None and context is not None and cfg.max_length > context:
        raise ConfigError(
            "evaluate.max_length",
            f"is larger than the model's context ({context} tokens)",
            value=cfg.max_length,
        )
    trained = trained_context(loaded.model.config)
    window = cfg.max_length or trained or (max(len(r) for r in data.rows) if data.processed else block_size)
    stride = cfg.stride or window
    if stride > window:
        raise ConfigError("evaluate.stride", f"must be at most the window ({window} tokens)", value=stride)
    return window, stride


def _causal(loaded: Loaded, data: EvalData, cfg: EvaluateConfig, block_size: int) -> dict:
    from lmtool.evaluation import perplexity
    from lmtool.evaluation.text_bytes import range_bytes

    window, stride = window_and_stride(cfg, loaded, data, block_size)
    tok = loaded.tokenizer
    start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    seqs = perplexity.streams(
        data, separate=cfg.documents == "separate", eos_id=tok.eos_token_id, start_id=start_id
    )
    total = perplexity.count_windows(seqs, window, stride)
    with console.progress("evaluating", total=total) as bar:
        totals = perplexity.sliding_window_nll(loaded, seqs, window, stride, cfg.batch_size, bar)
    if totals.tokens == 0:
        raise LmtoolError(f"{data.label}: nothing to score (the text is shorter than two tokens)")
    text_bytes = sum(range_bytes(tok, s, perplexity.scored_ranges(len(s), window, stride)) for s in seqs)
    return {**perplexity.metrics(totals, text_bytes), "window": window, "stride": stride,
            "documents": cfg.documents, "samples": len(data.rows)}  # fmt: skip


def _masked(loaded: Loaded, data: EvalData, cfg: EvaluateConfig) -> dict:
    from lmtool.evaluation.masked import blocks, masked_metrics, pseudo_perplexity
    from lmtool.positions import max_positions, trained_context

    if loaded.tokenizer.mask_token_id is None:
        raise LmtoolError(
            f"{cfg.model}: the tokenizer has no mask token, so masked-LM metrics cannot be computed"
        )
    length = cfg.max_length or trained_context(loaded.model.config) or 512
    rows = blocks(data, loaded.tokenizer, length, separate=cfg.documents == "separate")
    longest = max(len(r) for r in rows)
    context = max_positions(loaded.model.config)
    if context is not None and longest > context:
        raise LmtoolError(
            f"{data.label}: blocks of {longest} tokens are longer than the model's context ({context})"
        )
    batches = -(-len(rows) // cfg.batch_size)
    with console.progress("evaluating", total=batches) as bar:
        result = masked_metrics(
            loaded, rows, seed=cfg.seed, probability=cfg.mask_probability, batch_size=cfg.batch_size, bar=bar
        )
    if cfg.pseudo_perplexity:
        with console.progress("pseudo-perplexity", total=len(rows)) as bar:
            result.update(pseudo_perplexity(loaded, rows, batch_size=cfg.batch_size, bar=bar))
    return {**result, "seed": cfg.seed, "mask_probability": cfg.mask_probability, "samples": len(rows)}


def _write(result: dict, cfg: EvaluateConfig) -> None:
    """To `evaluate.output`, else eval.json in the model directory (skipped for a hub model name)."""
    target = Path(cfg.output) if cfg.output else Path(cfg.model) / "eval.json"
    if cfg.output is None and not Path(cfg.model).is_dir():
        console.warning("the model is not a local directory: not writing eval.json (use --output)")
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise LmtoolError(f"cannot write {target}: {exc.strerror}") from None
    console.info(f"wrote {target}")
