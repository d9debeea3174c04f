"""The HTTP plumbing every endpoint shares: OpenAI-style error bodies, the API key, bounded JSON bodies,
and admission (a bounded number of requests in the server; 429 past it).

Bodies are read and parsed here rather than by FastAPI so that every failure (too big, not UTF-8, not
JSON, wrong fields) is a 4xx with the same error shape, never a 500.
"""

from __future__ import annotations

import hmac
import json
from typing import TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class ApiError(Exception):
    """A request the server refuses: the status and the fields of the OpenAI error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_response(exc: ApiError) -> JSONResponse:
    body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


def check_key(request: Request, api_key: str | None) -> None:
    """401 unless `Authorization: Bearer KEY` matches (compared in constant time)."""
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                       type="authentication_error", code="invalid_api_key")  # fmt: skip


async def read_json(request: Request, schema: type[T], max_bytes: int) -> T:
    """The body, at most `max_bytes`, as UTF-8 JSON validated against `schema`."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise ApiError(413, f"request body over {max_bytes} bytes", code="body_too_large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise ApiError(413, f"request body over {max_bytes} bytes", code="body_too_large")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not UTF-8 ({exc.reason} at byte {exc.start})",
                       code="invalid_encoding") from None  # fmt: skip
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       code="invalid_json") from None  # fmt: skip
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise ApiError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param,
                       code="invalid_value") from None  # fmt: skip


class Admission:
    """Counts requests inside the server; one past `limit` gets 429 instead of a growing queue."""

    def __init__(self, limit: int):
        self.limit, self.inside = limit, 0

    def enter(self) -> None:
        if self.inside >= self.limit:
            raise ApiError(429, f"server busy: {self.limit} requests already queued; retry later",
                           type="rate_limit_error", code="queue_full")  # fmt: skip
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1
