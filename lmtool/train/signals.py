"""Preemption signals: SIGTERM, SIGUSR1 (SLURM's `--signal=USR1@120`) and SIGINT only set a flag.

The engine reads the flag when the step in progress is done (under torchrun, all ranks together
when they sum the step's loss), saves that step and raises `Preempted` (exit code 3: requeue me). A second SIGINT means "stop now": KeyboardInterrupt,
exit code 130, no checkpoint.

A terminal's Ctrl-C reaches the whole process group, DataLoader workers included: they ignore the
stop signals (`ignore_stop_signals`), so only the main process decides, and the workers stay alive
to serve the batches of the step being finished.
"""

from __future__ import annotations

import signal
from types import FrameType

_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequest:
    """Records the first stop signal; used as a context manager that installs and restores the handlers."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            raise KeyboardInterrupt
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        for sig in _SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals to the caller
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: the stop signals are the main process's to handle."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
