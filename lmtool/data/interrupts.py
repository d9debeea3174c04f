"""Ctrl-C and SIGTERM during preprocess: the main process stops; its worker processes ignore both.

A terminal's Ctrl-C (like `kill -TERM -PGID`, or a scheduler stopping a job) reaches every process of
the group. `multiprocessing.Pool` workers that died of it printed tracebacks, and one that died
mid-message or holding a queue lock hung the main process in `Pool.terminate`. So workers ignore both
signals (the main process holds them back while the workers fork) and are never killed: the
main process turns SIGINT into KeyboardInterrupt (exit 130) and SIGTERM into `Terminated` (exit 143),
which unwind through a pool shutdown that lets the running batches finish, then through the
removal of the partial directory.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from types import FrameType

from lmtool.errors import Terminated

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated("terminated by SIGTERM; the partial output was removed")


@contextlib.contextmanager
def stop_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated while inside (main thread only)."""
    with _handlers({signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _terminate}):
        yield


@contextlib.contextmanager
def worker_pool(context, processes: int, initializer, initargs: tuple) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers ignore STOP_SIGNALS. It is never stopped by killing: on the way out
    (done, error or signal) the batches not started are cancelled and the few running ones finish,
    so no worker dies mid-message or holding a queue lock. While the workers fork, a signal is only
    recorded (raised in a fork hook it would be lost, and a child would die of it) and raised after."""
    pending: list[int] = []
    with _deferred(pending):
        pool = ProcessPoolExecutor(
            processes, mp_context=context, initializer=_worker_start, initargs=(initializer, initargs)
        )
        try:
            pool.submit(int).result()  # fork the workers now
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    try:
        if pending:
            signal.raise_signal(pending[0])
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _deferred(pending: list[int]) -> Iterator[None]:
    with _handlers({sig: lambda signum, frame: pending.append(signum) for sig in STOP_SIGNALS}):
        yield


@contextlib.contextmanager
def _handlers(handlers: dict) -> Iterator[None]:
    """`handlers` installed while inside, the previous ones restored after. Off the main thread signals
    cannot be handled here, so nothing changes: the caller keeps its own handling."""
    try:
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_start(initializer, initargs: tuple) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    initializer(*initargs)
