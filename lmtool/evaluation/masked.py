"""Masked-LM evaluation: loss/perplexity/accuracy on a fixed-seed 15% mask, and pseudo-perplexity.

The mask is the training task's (a pure function of seed and block index), so the same seed
gives the same masks, and the same numbers, on every run and any device count.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmtool.config import MLMConfig
from lmtool.data.collate import IGNORE
from lmtool.data.pack import Packer
from lmtool.evaluation.data import EvalData
from lmtool.inference import Loaded


def blocks(data: EvalData, tokenizer, length: int, *, separate: bool) -> list[np.ndarray]:
    """Processed blocks as they are; raw documents packed into [CLS] ... [SEP] blocks of `length`
    tokens (documents end with [SEP]), all documents in one stream or each on its own."""
    if data.processed:
        return data.rows
    wrap = (tokenizer.cls_token_id, tokenizer.sep_token_id)
    docs = [np.append(row, tokenizer.sep_token_id) for row in data.rows]
    groups = [[d] for d in docs] if separate else [docs]
    out: list[np.ndarray] = []
    for group in groups:
        packer = Packer(length, dtype=np.dtype(np.int64), remainder="pad", wrap=wrap)
        for doc in group:
            out.extend(packer.add(doc))
        last = packer.finish()
        if last is not None:
            out.append(last)
    return out


def masked_metrics(
    loaded: Loaded, rows: list[np.ndarray], *, seed: int, probability: float, batch_size: int, bar
) -> dict:
    """Loss, perplexity and accuracy over the masked positions; block i is masked with sample_id i."""
    from lmtool.tasks import make_task

    task = make_task("mlm", loaded.tokenizer, seed=seed, mlm=MLMConfig(probability=probability))
    evaluator = task.evaluator()
    for start in range(0, len(rows), batch_size):
        examples = [
            {"input_ids": rows[i], "sample_id": i} for i in range(start, min(start + batch_size, len(rows)))
        ]
        batch = {k: v.to(loaded.device) for k, v in task.collate(examples).items()}
        with loaded.precision.autocast():
            evaluator.update(loaded.model, batch)
        bar.advance(1)
    metrics = evaluator.compute()
    metrics["masked_tokens"] = metrics.pop("tokens")
    return metrics


@torch.no_grad()
def pseudo_perplexity(loaded: Loaded, rows: list[np.ndarray], *, batch_size: int, bar) -> dict:
    """Mask each non-special token in turn and score it (Salazar et al. 2020): one pass per token."""
    from lmtool.tasks.mlm import masked_stats

    tok = loaded.tokenizer
    special = set(tok.all_special_ids)
    nll, count = 0.0, 0
    for row in rows:
        ids = torch.as_tensor(row, dtype=torch.long)
        positions = [i for i, t in enumerate(row.tolist()) if t not in special]
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            inputs = ids.repeat(len(chunk), 1)
            labels = torch.full_like(inputs, IGNORE)
            for j, pos in enumerate(chunk):
                labels[j, pos] = ids[pos]
                inputs[j, pos] = tok.mask_token_id
            with loaded.precision.autocast():
                logits = loaded.model(input_ids=inputs.to(loaded.device)).logits
            batch_nll, _, batch_count = masked_stats(logits, labels.to(loaded.device))
            nll += float(batch_nll)
            count += int(batch_count)
        bar.advance(1)
    loss = nll / max(count, 1)
    return {"pseudo_loss": loss, "pseudo_perplexity": math.exp(min(loss, 700.0)), "pseudo_tokens": count}
