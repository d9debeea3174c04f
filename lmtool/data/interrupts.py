"""Ctrl-C and SIGTERM during preprocess: the main process stops; its worker processes ignore both.

A terminal's Ctrl-C (like `kill -TERM -PGID`, or a scheduler stopping a job) reaches every process of
the group. Pool workers that died of it printed tracebacks, and one that died holding the pool's
queue lock hung the main process in `Pool.terminate`. So workers ignore both signals (blocked from
before the fork until they are ignored, so no worker can die of one), and the main process turns
SIGINT into KeyboardInterrupt (exit 130) and SIGTERM into `Terminated` (exit 143): both unwind
through the pool, which terminates its workers, and through the removal of the partial directory.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from lmtool.errors import Terminated

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated("terminated by SIGTERM; the partial output was removed")


@contextlib.contextmanager
def stop_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated while inside (main thread only)."""
    try:
        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
            signal.SIGTERM: signal.signal(signal.SIGTERM, _terminate),
        }
    except ValueError:  # not the main thread: the caller keeps its own handling
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def worker_pool(context, processes: int, initializer, initargs: tuple) -> Iterator:
    """`context.Pool` whose workers ignore STOP_SIGNALS; terminated on the way out. The signals stay
    blocked in this thread while the workers fork, and are delivered (raising here) once inside."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pool = context.Pool(processes, initializer=_worker_start, initargs=(initializer, initargs))
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    with pool:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        yield pool


def _worker_start(initializer, initargs: tuple) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    initializer(*initargs)
