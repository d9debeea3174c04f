"""The one disk-full classifier: errnos, and the messages libraries wrap them in."""

from __future__ import annotations

import errno

import pytest

from lmtool.diskfull import is_disk_full


def _raised_from(inner: BaseException, outer: BaseException, *, implicit: bool = False) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            if implicit:
                raise outer  # noqa: B904 - __context__ only, as a library's `except: raise Other` leaves it
            raise outer from inner
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EFBIG, "File too large"),
        Exception("Error while serializing: I/O error: File too large (os error 27)"),  # safetensors
        Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 189632 vs 189524"),
        RuntimeError(
            "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/3: "
            "file write failed"
        ),
        OSError("[Errno 28] Error writing bytes to file"),  # pyarrow: no errno attribute
        _raised_from(OSError(errno.EFBIG, "File too large"), RuntimeError("save failed")),
        _raised_from(OSError(errno.ENOSPC, "x"), ValueError("y"), implicit=True),
        _raised_from(
            _raised_from(OSError(errno.EDQUOT, "q"), KeyError("k")), RuntimeError("r"), implicit=True
        ),
    ],
)
def test_full_disks_quotas_and_file_size_limits_are_recognized(exc):
    assert is_disk_full(exc)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EACCES, "Permission denied"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        RuntimeError("[enforce fail at inline_container.cc:222] . file not found: archive/data.pkl"),
        ValueError("[Errno 280] not an errno"),
        _raised_from(OSError(errno.EIO, "Input/output error"), RuntimeError("save failed")),
    ],
)
def test_other_errors_are_not(exc):
    assert not is_disk_full(exc)
