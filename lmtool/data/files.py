"""Which files a directory or a `**` glob names: symlinked directories are followed, but each real
directory is entered once and each real file listed once, so a symlink loop cannot make lmtool
read the same file dozens of times; a directory that cannot be listed is an error, not "no files"."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fnmatch import fnmatchcase
from glob import glob, has_magic

from lmtool.data.decode import unreadable


def files_under(directory: str, key: str) -> list[str]:
    """Every file below `directory`, sorted."""
    return _once(list(_walk(directory, key)))


def glob_files(pattern: str, key: str) -> list[str]:
    """The files `pattern` matches (as `glob(recursive=True)` would, hidden names excluded), sorted."""
    parts = pattern.split(os.sep)
    if "**" not in parts:  # no recursion, so no loop: the standard glob does
        return _once([p for p in glob(pattern) if os.path.isfile(p)])
    fixed = 0
    while fixed < len(parts) and not has_magic(parts[fixed]):
        fixed += 1
    root = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else os.curdir)
    wanted = parts[fixed:]
    if not os.path.isdir(root):
        return []
    found = []
    for path in _walk(root, key):
        relative = os.path.relpath(path, root).split(os.sep)
        if _match(relative, wanted):
            found.append(path if fixed else os.path.relpath(path))
    return _once(found)


def _walk(root: str, key: str) -> Iterator[str]:
    """Files below `root`. Symlinked directories are entered after all others, so a directory inside
    the tree is listed under its own name, and a link back up (a loop) finds it already entered."""
    entered: set[str] = set()
    plain, linked = [root], []
    while plain or linked:
        directory = plain.pop() if plain else linked.pop(0)
        real = os.path.realpath(directory)
        if real in entered:
            continue
        entered.add(real)
        try:
            with os.scandir(directory) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            raise unreadable(key, f"directory {directory}", exc) from None
        for entry in listed:
            if entry.is_dir():
                (linked if entry.is_symlink() else plain).append(entry.path)
            elif entry.is_file():
                yield entry.path


def _once(paths: list[str]) -> list[str]:
    """`paths` with every real file kept once: under its own name if listed, else its first name."""
    chosen: dict[str, str] = {}
    for path in paths:
        real = os.path.realpath(path)
        if real not in chosen or real == os.path.abspath(path):
            chosen[real] = path
    return sorted(chosen.values())


def _match(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(
            _match(parts[skip:], pattern[1:])
            for skip in range(len(parts) + 1)
            if not any(p.startswith(".") for p in parts[:skip])
        )
    return bool(parts) and _segment(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def _segment(name: str, pattern: str) -> bool:
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatchcase(name, pattern)
