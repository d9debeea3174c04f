"""Task endpoints for the models `lmtool predict` reads (classifiers, taggers, extractive QA): records
shaped like predict's JSON lines, computed by lmtool.prediction on the server's one task thread."""

from __future__ import annotations

import json

from pydantic import Field, StrictStr, field_validator

from lmtool.errors import LmtoolError
from lmtool.serve.http import ApiError
from lmtool.serve.schemas import Strict
from lmtool.tasks.predictor import Item, Predictor
from lmtool.tasks.registry import finetune_spec

BATCH = 32


class TextInput(Strict):
    text: StrictStr
    text_pair: StrictStr | None = None


class QuestionInput(Strict):
    question: StrictStr
    context: StrictStr


def _listed(value: object) -> object:
    return [value] if isinstance(value, str | dict) else value


class TextsRequest(Strict):
    """`input`: a text, {"text", "text_pair"}, or a list of either (as predict's input lines)."""

    model: StrictStr | None = None
    input: list[StrictStr | TextInput] = Field(min_length=1, max_length=256)
    _input = field_validator("input", mode="before")(_listed)


class QuestionsRequest(Strict):
    """`input`: {"question", "context"} or a list of them."""

    model: StrictStr | None = None
    input: list[QuestionInput] = Field(min_length=1, max_length=256)
    _input = field_validator("input", mode="before")(_listed)


def route(pred: Predictor) -> str:
    """The model's endpoint under /v1 (its task's)."""
    return finetune_spec(pred.task).route


def schema(pred: Predictor) -> type[TextsRequest] | type[QuestionsRequest]:
    return QuestionsRequest if finetune_spec(pred.task).questions else TextsRequest


def predict(pred: Predictor, req: TextsRequest | QuestionsRequest) -> list[dict]:
    """What `lmtool predict` writes for these inputs (its default max length and stride)."""
    items = []
    for i, value in enumerate(req.input):
        if isinstance(value, QuestionInput):  # predict reads a QA line as this JSON
            items.append(Item(json.dumps(value.model_dump()), None, f"input.{i}"))
        else:
            text, pair = (value, None) if isinstance(value, str) else (value.text, value.text_pair)
            items.append(Item(text, pair, f"input.{i}"))
    spec = finetune_spec(pred.task)
    length = pred.default_max_length()
    if spec.max_length_cap is not None:
        length = min(spec.max_length_cap, length)
    try:
        return spec.decode(pred, items, BATCH, length, None)
    except LmtoolError as exc:
        raise ApiError(400, str(exc), param="input", code="invalid_value") from None
