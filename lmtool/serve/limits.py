"""Per-server bounds, set by the flags of `lmtool serve`; a module of its own so it imports no FastAPI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """What one server admits: body size, tokens, choices, prompts per request, requests at once."""

    max_body_bytes: int = 1 << 20
    max_tokens: int = 512  # per choice; also bounded by the model's context
    max_n: int = 8
    max_prompts: int = 16  # prompts in one completions request
    max_queue: int = 256  # requests admitted at once (queued or generating)
