"""Request bodies of the OpenAI-compatible endpoints: strict (unknown fields and wrong types are 400s).

Fields follow the OpenAI API names and defaults; what lmtool does not implement (logprobs, penalties,
tools, ...) is rejected as an unknown field rather than silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

Number = StrictFloat | StrictInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _listed(value: object) -> object:
    """A single string stands for a list of one (as OpenAI accepts); errors then name just the field."""
    return [value] if isinstance(value, str) else value


class Sampling(Strict):
    """The sampling fields both endpoints share; limits above the schema's are checked per server."""

    model: StrictStr
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number = Field(1.0, ge=0.0, le=2.0)
    top_p: Number = Field(1.0, gt=0.0, le=1.0)
    n: StrictInt = Field(1, ge=1)
    stop: list[StrictStr] = Field(default_factory=list, max_length=4)
    seed: StrictInt | None = Field(None, ge=0)
    stream: StrictBool = False
    user: StrictStr | None = None  # accepted (the official clients send it), not used

    _stop = field_validator("stop", mode="before")(lambda v: [] if v is None else _listed(v))


class CompletionRequest(Sampling):
    prompt: list[StrictStr] = Field(min_length=1)

    _prompt = field_validator("prompt", mode="before")(_listed)


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: StrictStr
    name: StrictStr | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class FillMaskRequest(Strict):
    model: StrictStr | None = None
    input: list[StrictStr] = Field(min_length=1, max_length=64)

    _input = field_validator("input", mode="before")(_listed)
    top_k: StrictInt = Field(5, ge=1, le=50)
