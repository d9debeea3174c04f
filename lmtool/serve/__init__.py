"""`lmtool serve`: a trained model behind an OpenAI-compatible HTTP API (FastAPI + uvicorn, the `serve` extra).

Safe by default: it binds 127.0.0.1, and binding elsewhere needs an API key. SIGTERM (or Ctrl-C) stops
accepting connections, lets the requests in flight finish, then exits 0.
"""

from __future__ import annotations

import ipaddress
import signal
from dataclasses import dataclass

from lmtool import console
from lmtool.errors import LmtoolError

LOOPBACK_NAMES = ("localhost",)


@dataclass
class Limits:
    """Per-server bounds (flags of `lmtool serve`)."""

    max_body_bytes: int = 1 << 20
    max_tokens: int = 512  # per choice; also bounded by the model's context
    max_n: int = 8
    max_prompts: int = 16  # prompts in one completions request
    max_queue: int = 256  # requests admitted at once (queued or generating)


def _require_stack() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LmtoolError("lmtool serve needs FastAPI and uvicorn: pip install lmtool[serve]") from None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(model: str, *, host: str, port: int, api_key: str | None, device: str, precision: str,
              limits: Limits, max_batch: int, window_ms: float) -> None:  # fmt: skip
    """Load the model, then serve until SIGTERM/SIGINT (requests in flight are finished first)."""
    _require_stack()
    if not is_loopback(host) and not api_key:
        raise LmtoolError(
            f"--host {host} exposes the server beyond this machine: set --api-key or LMTOOL_API_KEY"
        )
    if not 0 <= port <= 65535:
        raise LmtoolError(f"--port must be 0-65535 (got {port})")
    import uvicorn

    from lmtool.inference import load_for_inference
    from lmtool.serve.app import Server, build_app

    loaded = load_for_inference(model, device=device, precision=precision, section="serve")
    batcher = None
    if loaded.causal:
        from lmtool.generation.causal import Generator
        from lmtool.serve.batcher import Batcher

        generator = Generator(loaded)
        batcher = Batcher(
            generator, max_batch=max_batch if generator.pads_safely else 1, window_s=window_ms / 1000
        )
        batcher.start()
    server = Server(loaded, model, limits, api_key, batcher)
    config = uvicorn.Config(build_app(server), host=host, port=port, log_config=_log_config(),
                            timeout_graceful_shutdown=None, server_header=False)  # fmt: skip
    kind = "causal LM: /v1/completions, /v1/chat/completions" if loaded.causal else "masked LM: /v1/fill-mask"
    console.info(f"serving {model} ({kind}) on http://{host}:{port}{'' if api_key else ' (no API key)'}")
    # uvicorn re-raises the signal that stopped it once it has drained; a no-op handler makes that a clean exit 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(config).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if batcher is not None:
            batcher.stop()
        server.tasks.shutdown()
    console.info("server stopped")


def _log_config() -> dict:
    """uvicorn's logging with the access log on stderr too (stdout carries results only)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    return config
