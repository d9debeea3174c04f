"""`/v1/completions` and `/v1/chat/completions`: OpenAI requests turned into batcher jobs, and samples
turned back into OpenAI responses or server-sent events.

temperature 0 decodes greedily (as `lmtool generate --greedy`); otherwise top_p sampling over the whole
vocabulary (OpenAI has no top_k). `n` repeats each prompt n times in the batch.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse

from lmtool.config import GenerateConfig
from lmtool.errors import LmtoolError
from lmtool.generation.causal import Sample
from lmtool.serve.batcher import Job
from lmtool.serve.http import ApiError
from lmtool.serve.schemas import ChatRequest, CompletionRequest, Sampling

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


def chat_prompt(tokenizer, req: ChatRequest) -> str:
    """The tokenizer's chat template with the generation prompt (as lmtool's SFT renders chats), else
    one `role: content` line per message and `assistant:`."""
    from lmtool.data.sft_data import render_chat

    messages = [{"role": m.role, "content": m.content} for m in req.messages]
    if getattr(tokenizer, "chat_template", None):
        try:
            text = render_chat(tokenizer, messages, True, "messages")
        except LmtoolError as exc:
            raise ApiError(400, str(exc), param="messages", code="invalid_value") from None
        # The prompt is tokenized with special tokens (as `generate` does): a template's own BOS would double.
        bos = tokenizer.bos_token
        adds_bos = bos is not None and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]
        return text[len(bos) :] if adds_bos and text.startswith(bos) else text
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


class Completions:
    """Runs completion and chat requests for one served causal LM."""

    def __init__(self, server):
        self.server = server

    async def complete(self, req: CompletionRequest) -> JSONResponse | StreamingResponse:
        prompts = req.prompt
        if len(prompts) > self.server.limits.max_prompts:
            raise ApiError(400, f"prompt: give 1 to {self.server.limits.max_prompts} prompts",
                           param="prompt", code="invalid_value")  # fmt: skip
        return await self._run(req, prompts, chat=False)

    async def chat(self, req: ChatRequest) -> JSONResponse | StreamingResponse:
        return await self._run(req, [chat_prompt(self.server.loaded.tokenizer, req)], chat=True)

    async def _run(self, req: Sampling, prompts: list[str], chat: bool) -> JSONResponse | StreamingResponse:
        server, limits = self.server, self.server.limits
        server.check_model(req.model)
        if req.n > limits.max_n:
            raise ApiError(
                400, f"n: at most {limits.max_n} choices per request", param="n", code="invalid_value"
            )
        counts = [self._prompt_tokens(p) for p in prompts]
        room = server.generator.context - max(counts) if server.generator.context else limits.max_tokens
        max_tokens = (
            req.max_tokens
            if req.max_tokens is not None
            else max(1, min(16 if not chat else limits.max_tokens, room))
        )
        if max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens: at most {limits.max_tokens} on this server", param="max_tokens",
                           code="invalid_value")  # fmt: skip
        if max_tokens > room:
            where = "messages" if chat else "prompt"
            raise ApiError(400, f"this model's context is {server.generator.context} tokens; the {where} has "
                           f"{max(counts)} and max_tokens is {max_tokens}", param=where,
                           code="context_length_exceeded")  # fmt: skip
        greedy = req.temperature == 0
        settings = GenerateConfig(model=server.model_id, max_new_tokens=max_tokens, do_sample=not greedy,
                                  temperature=1.0 if greedy else float(req.temperature), top_k=None,
                                  top_p=float(req.top_p), stop=[s for s in req.stop if s], seed=req.seed)  # fmt: skip
        texts = [p for p in prompts for _ in range(req.n)]
        server.admission.enter()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # Admitted until generated (or abandoned): a stream that is never read still frees its place.
        future.add_done_callback(lambda _: server.admission.leave())
        if not req.stream:
            server.batcher.submit(Job(texts, settings, loop, future))
            samples = await future
            return JSONResponse(self._response(samples, counts, req.n, chat))
        pieces: asyncio.Queue = asyncio.Queue()
        future.add_done_callback(lambda _: pieces.put_nowait(None))
        job = Job(texts, settings, loop, future,
                  on_text=lambda row, text: loop.call_soon_threadsafe(pieces.put_nowait, (row, text)))  # fmt: skip
        server.batcher.submit(job)
        return StreamingResponse(self._events(future, pieces, len(texts), chat), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip

    def _prompt_tokens(self, text: str) -> int:
        return max(1, len(self.server.loaded.tokenizer(text)["input_ids"]))  # an empty prompt starts from BOS

    def _response(self, samples: list[Sample], counts: list[int], n: int, chat: bool) -> dict:
        completion = sum(s.tokens for s in samples)
        prompt = sum(counts) * n
        choices = [
            self._choice(i, s.text, FINISH[s.finish_reason], chat, delta=False) for i, s in enumerate(samples)
        ]
        return {**self._head(chat, stream=False), "choices": choices,
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}  # fmt: skip

    def _head(self, chat: bool, stream: bool) -> dict:
        kind = ("chat.completion.chunk" if stream else "chat.completion") if chat else "text_completion"
        return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "object": kind,
                "created": int(time.time()), "model": self.server.model_id}  # fmt: skip

    @staticmethod
    def _choice(index: int, text: str | None, finish: str | None, chat: bool, delta: bool) -> dict:
        if not chat:
            return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        if delta:
            return {"index": index, "delta": {} if text is None else {"content": text}, "logprobs": None,
                    "finish_reason": finish}  # fmt: skip
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": finish}  # fmt: skip

    async def _events(
        self, future: asyncio.Future, pieces: asyncio.Queue, rows: int, chat: bool
    ) -> AsyncIterator[str]:
        """Server-sent events: the text of each choice as it is produced, then each finish reason, then [DONE]."""
        head = self._head(chat, stream=True)

        def event(choice: dict) -> str:
            return f"data: {json.dumps({**head, 'choices': [choice]}, ensure_ascii=False)}\n\n"

        if chat:
            for row in range(rows):
                yield event({"index": row, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None})  # fmt: skip
        while (piece := await pieces.get()) is not None:
            yield event(self._choice(piece[0], piece[1], None, chat, delta=True))
        try:
            samples = future.result()
        except Exception as exc:  # noqa: BLE001 - headers are sent: report the failure in the stream
            error = {"message": f"generation failed: {type(exc).__name__}", "type": "server_error",
                     "param": None, "code": None}  # fmt: skip
            yield f"data: {json.dumps({'error': error})}\n\n"
        else:
            for row, sample in enumerate(samples):
                yield event(
                    self._choice(row, None if chat else "", FINISH[sample.finish_reason], chat, delta=True)
                )
        yield "data: [DONE]\n\n"
