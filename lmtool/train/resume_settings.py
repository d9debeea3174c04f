"""On resume, say which training settings differ from the checkpoint's: the run follows the new ones
(the schedule and optimizer settings are rebuilt from the current config), and the log should show
that the curve changes there on purpose."""

from __future__ import annotations

from pathlib import Path

import yaml

from lmtool import console
from lmtool.config import Config

SAVED_CONFIG = "lmtool_config.yaml"  # the resolved config a checkpoint was written with
IGNORED = {"resume"}  # where to resume from is expected to differ


def _flat(section: dict, prefix: str) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in section.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_train_settings(checkpoint_dir: Path, config: Config) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every train.* setting that differs; none when the
    checkpoint has no readable config."""
    try:
        saved = yaml.safe_load((Path(checkpoint_dir) / SAVED_CONFIG).read_text(encoding="utf-8"))
        before = _flat(saved["train"], "train.")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return []
    now = _flat(config.train.model_dump(mode="json"), "train.")
    keys = [k for k in now if k.split(".")[1] not in IGNORED]
    return [(k, before.get(k), now[k]) for k in keys if before.get(k) != now[k]]


def warn_changed_settings(checkpoint_dir: Path, config: Config) -> None:
    """One warning line per train.* setting changed since the checkpoint."""
    for key, old, new in changed_train_settings(checkpoint_dir, config):
        console.warning(
            f"{key} changed since the checkpoint: {old!r} -> {new!r} (the run follows the new value)"
        )
