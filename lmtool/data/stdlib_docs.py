"""The built-in `stdlib-docs` corpus: docstrings of the installed Python standard library.

About 1.8 MB of real English prose on every machine that has Python, so the quickstart
trains offline. Files are parsed with `ast` (never imported: importing would run their code),
walked in sorted order, so the corpus is the same on every run of the same Python.
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's .py files (tests and third-party packages left out), sorted."""
    root = root or stdlib_root()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        found.extend(Path(dirpath) / name for name in sorted(filenames) if name.endswith(".py"))
    return found


def iter_docstrings(root: Path | None = None) -> Iterator[str]:
    """Module, class and function docstrings, one document each, file by file."""
    for path in stdlib_files(root):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue  # e.g. lib2to3 test fixtures written in Python 2
        for node in ast.walk(tree):
            if isinstance(node, DOCUMENTED):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    yield doc


def fingerprint() -> dict:
    """Identifies the corpus without parsing it: the Python build and its stdlib location."""
    return {"python": sys.version, "root": str(stdlib_root())}
