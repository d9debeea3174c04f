"""Fill-mask for masked LMs: the top-k candidates, with probabilities, for every mask token of a prompt."""

from __future__ import annotations

import torch

from lmtool.errors import LmtoolError
from lmtool.generation.prompts import Prompt
from lmtool.inference import Loaded


def check_masks(tokenizer, prompts: list[Prompt]) -> None:
    """Every prompt must hold the mask token (checked before any output is written)."""
    if tokenizer.mask_token is None:
        raise LmtoolError("this masked LM's tokenizer has no mask token, so there is nothing to fill")
    for prompt in prompts:
        if tokenizer.mask_token not in prompt.text:
            raise LmtoolError(
                f"{prompt.origin}: the prompt has no {tokenizer.mask_token} token to fill: {prompt.text[:60]!r}"
            )


def fill_mask(loaded: Loaded, prompts: list[Prompt]) -> list[dict]:
    """One record per prompt: `masks` (position and candidates per mask) and `text` with each mask
    replaced by its best candidate. Special tokens are never candidates."""
    tok = loaded.tokenizer
    mask = tok.mask_token
    enc = tok([p.text for p in prompts], padding=True, truncation=True, return_tensors="pt")
    enc = {
        k: v.to(loaded.device)
        for k, v in enc.items()
        if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    with torch.inference_mode(), loaded.precision.autocast():
        logits = loaded.model(**enc).logits.float()
    special = torch.tensor(sorted(set(tok.all_special_ids)), device=logits.device)
    records = []
    for row, prompt in enumerate(prompts):
        k = min(prompt.settings.fill_mask_top_k, logits.shape[-1] - len(special))
        positions = (enc["input_ids"][row] == tok.mask_token_id).nonzero().view(-1).tolist()
        masks, text = [], prompt.text
        for pos in positions:
            scores = logits[row, pos].index_fill(0, special, float("-inf")).softmax(-1)
            probs, ids = scores.topk(k)
            candidates = [
                {"token": tok.decode([i]).strip(), "token_id": i, "score": round(p, 6)}
                for p, i in zip(probs.tolist(), ids.tolist(), strict=True)
            ]
            masks.append({"position": pos, "candidates": candidates})
            text = text.replace(mask, candidates[0]["token"], 1)
        records.append({"index": prompt.index, "prompt": prompt.text, "text": text, "masks": masks,
                        "settings": {"fill_mask_top_k": prompt.settings.fill_mask_top_k}})  # fmt: skip
    return records
