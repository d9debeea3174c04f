"""Perplexity of a causal LM on a text file by the Hugging Face recipe, with transformers alone.

The "Perplexity of fixed-length models" recipe of the transformers docs (token-weighted): tokenize the
text as written, slide a window of --max-length tokens by --stride, score the tokens no earlier
window scored. `lmtool evaluate --data FILE --max-length M --stride S` gives the same figure (README,
Evaluate). Prints one JSON line.

    python scripts/hf_perplexity_recipe.py --model runs/x/final --data text.txt --max-length 128 --stride 64
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def fixed_length_perplexity(model_dir: str, text: str, max_length: int, stride: int) -> tuple[float, int]:
    """(perplexity, scored tokens) of `text` by the recipe, with plain transformers (no lmtool code)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    encodings = AutoTokenizer.from_pretrained(model_dir)(text, return_tensors="pt")
    seq_len = encodings.input_ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may differ from stride on the last loop
        input_ids = encodings.input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        # The labels the model scores after its shift. The docs write `(target_ids != -100).sum() - batch_size`:
        # the same for the first window, one short for each later one when stride < max_length.
        num_valid_tokens = (target_ids[:, 1:] != -100).sum().item()
        nll_sum += loss.item() * num_valid_tokens
        n_tokens += num_valid_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens), n_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--stride", type=int, required=True)
    args = parser.parse_args()
    with open(args.data, encoding="utf-8") as f:
        perplexity, tokens = fixed_length_perplexity(args.model, f.read(), args.max_length, args.stride)
    print(json.dumps({"perplexity": perplexity, "tokens": tokens}))


if __name__ == "__main__":
    main()
