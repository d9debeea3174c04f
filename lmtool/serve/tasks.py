"""Task endpoints for the models `lmtool predict` reads (classifiers, taggers, extractive QA): records
shaped like predict's JSON lines, computed by lmtool.prediction on the server's one task thread.

Concurrent requests share forwards: those that arrive while the task thread is busy are decoded together
in its next call (up to BATCH inputs), so throughput grows with concurrency as completions' does."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Executor

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


def _items(req: TextsRequest | QuestionsRequest) -> list[Item]:
    items = []
    for i, value in enumerate(req.input):
        if isinstance(value, QuestionInput):  # predict reads a QA line as this JSON
            items.append(Item(json.dumps(value.model_dump()), None, f"input.{i}"))
        else:
            text, pair = (value, None) if isinstance(value, str) else (value.text, value.text_pair)
            items.append(Item(text, pair, f"input.{i}"))
    return items


def _decode(pred: Predictor, items: list[Item]) -> list[dict]:
    """What `lmtool predict` writes for these inputs (its default max length and stride)."""
    spec = finetune_spec(pred.task)
    length = spec.default_max_length(pred)
    try:
        return spec.decode(pred, items, BATCH, length, None)
    except LmtoolError as exc:
        raise ApiError(400, str(exc), param="input", code="invalid_value") from None


class TaskBatcher:
    """Requests queued on the event loop; one drain at a time hands the task thread all that are waiting."""

    def __init__(self, pred: Predictor, executor: Executor):
        self.pred, self.executor = pred, executor
        self.waiting: list[tuple[list[Item], asyncio.Future]] = []
        self.draining = False
        self.drain_task: asyncio.Task | None = None  # kept: the loop holds tasks only weakly

    async def predict(self, req: TextsRequest | QuestionsRequest) -> list[dict]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((_items(req), future))
        if not self.draining:
            self.draining = True
            self.drain_task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(0)  # requests parsed in the same turn of the loop join the first batch
            while self.waiting:
                jobs, size = [], 0
                while self.waiting and (not jobs or size + len(self.waiting[0][0]) <= BATCH):
                    jobs.append(self.waiting.pop(0))
                    size += len(jobs[-1][0])
                jobs = [job for job in jobs if not job[1].done()]  # the client went away
                if not jobs:
                    continue
                results = await loop.run_in_executor(self.executor, self._run, [items for items, _ in jobs])
                for (_, future), result in zip(jobs, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.draining = False

    def _run(self, batch: list[list[Item]]) -> list[list[dict] | BaseException]:
        """Each request's records from one decode; a refused batch is decoded request by request, so that
        only the request at fault gets its error."""
        try:
            records = _decode(self.pred, [item for items in batch for item in items])
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the server
            if len(batch) > 1 and isinstance(exc, ApiError):
                return [self._alone(items) for items in batch]
            return [exc] * len(batch)
        out: list[list[dict] | BaseException] = []
        for items in batch:
            out.append(records[: len(items)])
            records = records[len(items) :]
        return out

    def _alone(self, items: list[Item]) -> list[dict] | BaseException:
        try:
            return _decode(self.pred, items)
        except Exception as exc:  # noqa: BLE001 - handed to that request
            return exc
