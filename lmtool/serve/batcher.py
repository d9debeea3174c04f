"""Concurrent requests collected into batched `generate` calls on one worker thread.

Requests arriving within a short window (and with the same sampling settings) share one left-padded,
KV-cached `Generator.run`, so throughput grows with concurrency while the event loop never blocks:
each job hands back its samples through its asyncio loop. A seeded sampling job runs alone, so its
output depends only on its seed, as with `lmtool generate --seed`.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers.generation.streamers import BaseStreamer

from lmtool import console
from lmtool.config import GenerateConfig
from lmtool.generation.causal import Generator, Sample, TextStream
from lmtool.generation.prompts import PER_PROMPT_KEYS, Prompt


@dataclass
class Job:
    """One request's rows (each prompt repeated n times) and where its results go."""

    texts: list[str]
    settings: GenerateConfig
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    on_text: Callable[[int, str], None] | None = None  # streaming: (row, new text), called on the worker
    key: tuple = field(init=False)

    def __post_init__(self) -> None:
        alone = self.settings.seed is not None and self.settings.do_sample
        self.key = (
            *(json.dumps(getattr(self.settings, k)) for k in PER_PROMPT_KEYS),
            id(self) if alone else 0,
        )


class RowStreams(BaseStreamer):
    """Hands each row's new tokens of a batched `generate` to that row's TextStream."""

    def __init__(self, streams: list[TextStream | None]):
        self.streams, self.seen_prompt = streams, False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:  # the first call carries the prompts
            self.seen_prompt = True
            return
        for row, stream in enumerate(self.streams):
            if stream is not None:
                stream.put(value[row : row + 1])

    def end(self) -> None:
        for stream in self.streams:
            if stream is not None:
                stream.end()


class Batcher:
    """A worker thread that runs queued jobs in batches of at most `max_batch` rows."""

    def __init__(self, generator: Generator, *, max_batch: int, window_s: float):
        self.generator, self.max_batch, self.window_s = generator, max_batch, window_s
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="lmtool-serve-generate", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self.jobs.put(None)
        self.thread.join()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def _work(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            pending, stopping = [first], False
            # Collect while requests keep coming (each extends the window), for at most 4 windows.
            started = time.monotonic()
            deadline = started + self.window_s
            while sum(len(j.texts) for j in pending) < self.max_batch:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                pending.append(job)
                deadline = min(time.monotonic() + self.window_s, started + 4 * self.window_s)
            pending = [job for job in pending if not job.future.done()]  # the client went away
            for group in self._groups(pending):
                self._run(group)
            if stopping:
                return

    def _groups(self, jobs: list[Job]) -> list[list[Job]]:
        """Jobs with the same settings together (arrival order kept), each group within max_batch rows."""
        groups: dict[tuple, list[list[Job]]] = {}
        for job in jobs:
            runs = groups.setdefault(job.key, [[]])
            if runs[-1] and sum(len(j.texts) for j in runs[-1]) + len(job.texts) > self.max_batch:
                runs.append([])
            runs[-1].append(job)
        return [run for runs in groups.values() for run in runs]

    def _run(self, group: list[Job]) -> None:
        settings = group[0].settings
        prompts = [
            Prompt(i, text, settings, "request") for i, text in enumerate(t for j in group for t in j.texts)
        ]
        streams: list[TextStream | None] = []
        for job in group:
            for row in range(len(job.texts)):
                streams.append(self._stream(job, row) if job.on_text else None)
        try:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            use_streams = any(s is not None for s in streams)
            samples = self.generator.run(
                prompts, settings, streamer=RowStreams(streams) if use_streams else None
            )
        except Exception as exc:  # noqa: BLE001 - one failed batch fails its requests, not the server
            console.error(f"generation failed: {type(exc).__name__}: {exc}")
            for job in group:
                job.loop.call_soon_threadsafe(_resolve, job.future, None, exc)
            return
        start = 0
        for job in group:
            mine = samples[start : start + len(job.texts)]
            start += len(job.texts)
            job.loop.call_soon_threadsafe(_resolve, job.future, mine, None)

    def _stream(self, job: Job, row: int) -> TextStream:
        assert job.on_text is not None
        on_text = job.on_text
        stream = TextStream(self.generator.loaded.tokenizer, job.settings.stop, self.generator.eos_ids,
                            lambda text: on_text(row, text))  # fmt: skip
        stream.seen_prompt = True  # RowStreams skips the prompts for every row
        return stream


def _resolve(future: asyncio.Future, samples: list[Sample] | None, exc: BaseException | None) -> None:
    if future.done():  # the client went away
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(samples)
