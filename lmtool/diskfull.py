"""One answer, for the whole package, to "did this fail because the disk (or a limit) is full?".

A full disk is the output's problem, not a bug: it must exit 2 naming what was being written. The
errno is not always there to ask: libraries that write through their own code wrap it in a message
of their own - safetensors (Rust) "... File too large (os error 27)", torch's zip writer
"[enforce fail at inline_container.cc] ... file write failed" (to a path) or "... unexpected pos N vs M"
(to a Python file object, whose OSError it swallows: a short write), pyarrow "[Errno 28] ...".
"""

from __future__ import annotations

import errno

# No space left, quota exceeded, file-size limit (RLIMIT_FSIZE / `ulimit -f`, or the filesystem's largest file).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_TEXTS = (
    "No space left on device",
    "Disk quota exceeded",
    "File too large",
    *(f"os error {code}" for code in sorted(DISK_FULL_ERRNOS)),  # Rust's io::Error (safetensors, tokenizers)
    *(f"[Errno {code}]" for code in sorted(DISK_FULL_ERRNOS)),  # an OSError turned into text by a wrapper
)
_TORCH_WRITER = "inline_container.cc"
_TORCH_SHORT_WRITE = ("file write failed", "unexpected pos")


def disk_full_error(exc: BaseException) -> BaseException | None:
    """The exception in `exc`'s chain (`__cause__` and `__context__`, both followed) that says the disk, the
    quota or the file-size limit is full, or None."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _says_full(current):
            return current
        pending.extend(e for e in (current.__context__, current.__cause__) if e is not None)
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling, says the disk is full."""
    return disk_full_error(exc) is not None


def _says_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    if any(fragment in text for fragment in _TEXTS):
        return True
    return _TORCH_WRITER in text and any(fragment in text for fragment in _TORCH_SHORT_WRITE)
