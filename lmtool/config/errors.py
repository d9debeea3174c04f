"""The errors a config raises, defined at the bottom so that the config imports nothing else of lmtool's;
`lmtool.errors` re-exports them (one class each, whichever module a caller imports them from)."""

from __future__ import annotations

EXIT_USAGE = 2


class LmtoolError(Exception):
    """A problem with the user's config or input; printed as `error: <message>`, exit 2."""

    exit_code = EXIT_USAGE


class ConfigError(LmtoolError):
    """A config value is wrong; the message names the dotted key and, where known, file and line."""

    def __init__(
        self,
        key: str,
        problem: str,
        *,
        value: object = None,
        has_value: bool = True,
        hint: str | None = None,
        location: str | None = None,
    ):
        self.key = key
        parts = [f"{key}: {problem}" if key else problem]
        if has_value:
            parts.append(f"(got {short_repr(value)})")
        if hint:
            parts.append(f"- {hint}")
        if location:
            parts.append(f"[{location}]")
        super().__init__(" ".join(parts))


def short_repr(value: object, limit: int = 80) -> str:
    """repr(value), elided in the middle past `limit`: the end of a long path is its file name."""
    text = repr(value)
    if len(text) <= limit:
        return text
    head = (limit - 3) // 3
    return text[:head] + "..." + text[len(text) - (limit - 3 - head) :]
