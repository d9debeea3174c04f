"""Request bodies of the OpenAI-compatible endpoints: strict (unknown fields and wrong types are 400s).

Fields follow the OpenAI API names and defaults; what lmtool does not implement (logprobs, penalties,
tools, ...) is rejected as an unknown field rather than silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Number = StrictFloat | StrictInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sampling(Strict):
    """The sampling fields both endpoints share; limits above the schema's are checked per server."""

    model: StrictStr
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number = Field(1.0, ge=0.0, le=2.0)
    top_p: Number = Field(1.0, gt=0.0, le=1.0)
    n: StrictInt = Field(1, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(None, ge=0)
    stream: StrictBool = False
    user: StrictStr | None = None  # accepted (the official clients send it), not used

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return [s for s in stops if s]


class CompletionRequest(Sampling):
    prompt: StrictStr | list[StrictStr] = Field(min_length=1)


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: StrictStr
    name: StrictStr | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class FillMaskRequest(Strict):
    model: StrictStr | None = None
    input: StrictStr | list[StrictStr] = Field(min_length=1)
    top_k: StrictInt = Field(5, ge=1, le=50)
