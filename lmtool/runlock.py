"""One writer per directory: an exclusive `flock` on a lock file beside the directory it guards.

Two runs writing the same run directory (a requeued job and the orphans of the first, say) would
interleave their metrics and checkpoints; two preprocess runs would race to install the same
processed directory. The lock file sits beside the directory (`<parent>/.<name>.lock`), not in it,
because `--overwrite` deletes the directory and preprocess installs its output by renaming. The
kernel drops the lock when its holder dies, even by SIGKILL, so a lock is never stale; the file
holds the holder's pid and host for the refusal message and is removed by the holder on release.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path

from lmtool.errors import LmtoolError


def lock_path(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.lock"


class LockBusy(LmtoolError):
    """Another process holds the lock; `holder` is its pid and host."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


class DirLock:
    """Context manager holding the lock of `directory`; a second holder gets exit 2 naming the first, or,
    with `on_wait`, waits for it without a time limit (`on_wait(holder)` is called once, before waiting)."""

    def __init__(self, directory: Path, key: str, on_wait: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        self.key = key  # the config key naming the directory, for messages
        self.path = lock_path(self.directory)
        self.on_wait = on_wait
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            announced = False
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(fd)
                    if self.on_wait is None:
                        os.close(fd)
                        raise LockBusy(
                            f"{self.key}: {self.directory} is in use by another lmtool process ({holder}); "
                            "wait for it to finish or stop it",
                            holder,
                        ) from None
                    if not announced:
                        self.on_wait(holder)
                        announced = True
                    fcntl.flock(fd, fcntl.LOCK_EX)  # no time limit: the kernel drops a dead holder's lock
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
        except OSError as exc:
            raise LmtoolError(
                f"{self.key}: cannot write there (lock file {self.path}): {exc.strerror or exc}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked, so nobody locks the file being removed
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "pid unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
