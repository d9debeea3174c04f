"""The FastAPI app: routes, the API key on /v1, OpenAI-style errors for every failure."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lmtool import console
from lmtool.inference import Loaded
from lmtool.serve.http import Admission, ApiError, check_key, error_response, read_json
from lmtool.serve.limits import Limits
from lmtool.serve.schemas import ChatRequest, CompletionRequest, FillMaskRequest


class Server:
    """What the routes share: the model, its generator and batcher, the limits and the key."""

    def __init__(self, model_id: str, limits: Limits, api_key: str | None, *, loaded: Loaded | None = None,
                 batcher=None, predictor=None):  # fmt: skip
        self.model_id, self.limits, self.api_key = model_id, limits, api_key
        self.loaded, self.batcher, self.predictor = loaded, batcher, predictor
        self.generator = batcher.generator if batcher is not None else None
        self.admission = Admission(limits.max_queue)
        self.tasks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmtool-serve-task")
        self.created = int(time.time())

    def routes(self) -> str:
        """The model endpoints, for the startup line."""
        if self.batcher is not None:
            return "/v1/completions, /v1/chat/completions"
        if self.predictor is not None:
            from lmtool.serve.tasks import route

            return f"/v1{route(self.predictor)}"
        return "/v1/fill-mask"

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_id:
            raise ApiError(404, f"model {name!r} is not served here; this server serves {self.model_id!r}",
                           param="model", code="model_not_found")  # fmt: skip

    async def in_worker(self, fn, *args):
        """Run a task model call on the one task thread (the event loop stays free), within admission."""
        return await self.admitted(asyncio.get_running_loop().run_in_executor, self.tasks, fn, *args)

    async def admitted(self, start, *args):
        """Await `start(*args)` within admission: a 429 when the server is full, before anything starts."""
        self.admission.enter()
        try:
            return await start(*args)
        finally:
            self.admission.leave()


def build_app(server: Server) -> FastAPI:
    app = FastAPI(title="lmtool serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(
            ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(400, str(exc.errors()[0].get("msg")), code="invalid_value"))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        console.error(f"internal error on {request.url.path}: {type(exc).__name__}: {exc}")
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error"))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": server.model_id, "queued": server.admission.inside}

    def auth(request: Request) -> None:
        check_key(request, server.api_key)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(auth)])

    @v1.get("/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": server.model_id, "object": "model", "created": server.created,
                                            "owned_by": "lmtool"}]}  # fmt: skip

    if server.batcher is not None:
        from lmtool.serve.completions import Completions

        completions = Completions(server)

        @v1.post("/completions")
        async def complete(request: Request):
            return await completions.complete(
                await read_json(request, CompletionRequest, server.limits.max_body_bytes)
            )

        @v1.post("/chat/completions")
        async def chat(request: Request):
            return await completions.chat(await read_json(request, ChatRequest, server.limits.max_body_bytes))
    elif server.predictor is not None:
        from lmtool.serve import tasks

        pred = server.predictor
        batcher = tasks.TaskBatcher(pred, server.tasks)

        @v1.post(tasks.route(pred))
        async def predict(request: Request):
            req = await read_json(request, tasks.schema(pred), server.limits.max_body_bytes)
            server.check_model(req.model)
            return {"object": "list", "data": await server.admitted(batcher.predict, req)}
    else:

        @v1.post("/fill-mask")
        async def fill(request: Request):
            req = await read_json(request, FillMaskRequest, server.limits.max_body_bytes)
            server.check_model(req.model)
            return {"object": "list", "data": await server.in_worker(_fill_mask, server.loaded, req)}

    app.include_router(v1)
    return app


def _fill_mask(loaded: Loaded, req: FillMaskRequest) -> list[dict]:
    from lmtool.config import GenerateConfig
    from lmtool.errors import LmtoolError
    from lmtool.generation.fill_mask import check_masks, fill_mask
    from lmtool.generation.prompts import Prompt

    texts = req.input
    settings = GenerateConfig(model="served", fill_mask_top_k=req.top_k)
    prompts = [Prompt(i, text, settings, f"input {i}") for i, text in enumerate(texts)]
    try:
        check_masks(loaded.tokenizer, prompts)
    except LmtoolError as exc:
        raise ApiError(400, str(exc), param="input", code="invalid_value") from None
    return fill_mask(loaded, prompts)
