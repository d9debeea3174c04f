"""The base of every config section, and the value types several sections share."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Device = Literal["auto", "cpu", "cuda", "mps"]
# A number of things (sequences, steps, tokens, workers): at least one.
Count = Annotated[int, Field(ge=1)]
# A random seed: any non-negative integer (numpy refuses negative ones).
Seed = Annotated[int, Field(ge=0)]


class Section(BaseModel):
    """Unknown keys are errors (with a did-you-mean), defaults are validated, numbers must be finite."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)
