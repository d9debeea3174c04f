"""Hub names on a machine that cannot reach the hub: one line within seconds, not minutes of retries.

`transformers` and `datasets` retry a dead connection five times (about a minute and two dozen log
lines) before giving up. Before a hub name is loaded, `require_hub` checks what would happen: a
cached copy is used as is (offline if the hub is unreachable), an uncached name on a machine that
is offline or cannot reach the endpoint is an exit-2 error naming the config key.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import constants

from lmtool import console
from lmtool.config import looks_like_hub_id
from lmtool.errors import ConfigError, LmtoolError

PROBE_SECONDS = 3.0  # a TCP connect to the endpoint (or proxy) answers in well under a second when online


def require_model_source(name: str, key: str) -> None:
    """`name`, set as config `key`, is a local directory or a hub model name this machine can load: else exit 2."""
    if not os.path.isdir(os.path.expanduser(name)) and not looks_like_hub_id(name):
        raise ConfigError(key, "directory not found (and not a hub model name)", value=name)
    require_hub(name, key)


def require_hub(name: str, key: str, repo_type: str = "model") -> None:
    """Make sure `name` (not a local directory) can be loaded from the hub or its cache, or fail fast.

    `key` names what the user set (e.g. `model.init_from`); `repo_type` is model or dataset. A missing
    path that is no hub name either is left to the caller to report.
    """
    if os.path.isdir(os.path.expanduser(name)) or not looks_like_hub_id(name):
        return
    cached = _in_cache(name, repo_type)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return
        raise LmtoolError(
            f"{key}: '{name}' is neither a local directory nor in the hub cache, and HF_HUB_OFFLINE is set"
        )
    target = _probe_target(constants.ENDPOINT)
    if _reachable(*target):
        return
    if cached:
        console.info(f"{constants.ENDPOINT} is unreachable: using the cached copy of {name}")
        _go_offline()
        return
    raise LmtoolError(
        f"{key}: '{name}' is neither a local directory nor reachable: cannot connect to "
        f"{target[0]}:{target[1]} (offline? HF_HUB_OFFLINE=1 uses cached files only)"
    )


def _in_cache(name: str, repo_type: str) -> bool:
    """Whether the hub cache (or, for datasets, the `datasets` cache) holds a copy of `name`."""
    hub_dir = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{name.replace('/', '--')}" / "snapshots"
    if hub_dir.is_dir() and any(hub_dir.iterdir()):
        return True
    if repo_type == "dataset":
        datasets_cache = os.environ.get("HF_DATASETS_CACHE") or os.path.join(
            os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "datasets"
        )
        return (Path(datasets_cache) / name.replace("/", "___")).is_dir()
    return False


def _probe_target(endpoint: str) -> tuple[str, int]:
    """The host and port a request to `endpoint` would connect to first: its proxy if one is set."""
    url = urlsplit(endpoint)
    proxy = os.environ.get(f"{url.scheme}_proxy") or os.environ.get(f"{url.scheme.upper()}_PROXY")
    if proxy and not _bypasses_proxy(url.hostname or ""):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def _bypasses_proxy(host: str) -> bool:
    no_proxy = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    entries = [e.strip().lstrip(".") for e in no_proxy.split(",") if e.strip()]
    return "*" in entries or any(host == e or host.endswith("." + e) for e in entries)


@functools.cache
def _reachable(host: str, port: int) -> bool:
    """A TCP connect within PROBE_SECONDS, name lookup included (run in a thread: it has no timeout)."""
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS)
    return bool(result and result[0])


def _go_offline() -> None:
    """Switch the hub libraries to their cache, in this process and the ones it starts."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True
