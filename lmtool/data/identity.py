"""A tokenizer's identity: what decides which ids a text becomes, hashed, to tell tokenizers apart.

`lmtool preprocess` stores it in the manifest and `lmtool evaluate` compares it with the model's
tokenizer: two tokenizers with the same vocabulary size can still give different ids.
"""

from __future__ import annotations

import hashlib
import json

# Not the pad token: padding never reaches the data, and preprocess sets pad = EOS on tokenizers without one.
SPECIAL_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token")


def tokenizer_identity(tokenizer) -> str:
    """sha256 of the vocabulary (token -> id), the special tokens, and the backend's normalizer,
    pre-tokenizer and merges: the same for a tokenizer and its saved-and-reloaded copy."""
    payload: dict = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {role: str(getattr(tokenizer, role, None)) for role in SPECIAL_ROLES},
        "added_special": sorted(str(t) for t in tokenizer.all_special_tokens),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        payload["normalizer"] = spec.get("normalizer")
        payload["pre_tokenizer"] = spec.get("pre_tokenizer")
        merges = spec.get("model", {}).get("merges") or []
        payload["merges"] = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
