"""`lmtool serve`: a trained model behind an OpenAI-compatible HTTP API (FastAPI + uvicorn, the `serve` extra).

Safe by default: it binds 127.0.0.1, and binding elsewhere needs an API key. SIGTERM (or Ctrl-C) stops
accepting connections, lets the requests in flight finish, then exits 0.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys

from lmtool import console
from lmtool.errors import LmtoolError
from lmtool.serve.limits import Limits

LOOPBACK_NAMES = ("localhost",)
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
    for flag, value, choices in [("--device", device, DEVICES), ("--precision", precision, PRECISIONS)]:
        if value not in choices:
            raise LmtoolError(f"{flag} must be one of {', '.join(choices)} (got {value!r})")
    if not 0 <= port <= 65535:
        raise LmtoolError(f"--port must be 0-65535 (got {port})")
    import uvicorn

    from lmtool.serve.app import build_app

    sock = _listen(host, port)  # before loading: a port in use is an exit-2 error, found at once
    server = load_server(model, limits, api_key, device, precision, max_batch, window_ms)
    config = uvicorn.Config(build_app(server), host=host, port=port, log_config=_log_config(),
                            timeout_graceful_shutdown=None, server_header=False)  # fmt: skip
    console.info(
        f"serving {model} ({server.routes()}) on http://{host}:{port}{'' if api_key else ' (no API key)'}"
    )
    # The event loop and the generation thread share the GIL: with CPython's default 5 ms switch interval each
    # socket operation of the loop can wait that long behind a generating thread.
    sys.setswitchinterval(0.0005)
    # uvicorn re-raises the signal that stopped it once it has drained; a no-op handler makes that a clean exit 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        signal.signal(signal.SIGTERM, previous)
        if server.batcher is not None:
            server.batcher.stop()
        server.tasks.shutdown()
    console.info("server stopped")


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn; exit 2 naming the address when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise LmtoolError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def load_server(model: str, limits: Limits, api_key: str | None, device: str, precision: str, max_batch: int,
          window_ms: float):  # fmt: skip
    """The Server for the model's kind: a task model (as `predict` reads it), a causal LM with its batcher,
    or a masked LM."""
    from lmtool.serve.app import Server
    from lmtool.tasks.registry import head_suffixes

    if _architectures(model) & set(head_suffixes()):
        from lmtool.prediction.model import load_predictor

        return Server(model, limits, api_key, predictor=load_predictor(model, device))
    from lmtool.inference import load_for_inference

    loaded = load_for_inference(model, device=device, precision=precision, section="serve")
    if not loaded.causal:
        return Server(model, limits, api_key, loaded=loaded)
    from lmtool.generation.causal import Generator
    from lmtool.serve.batcher import Batcher

    generator = Generator(loaded)
    batcher = Batcher(
        generator, max_batch=max_batch if generator.pads_safely else 1, window_s=window_ms / 1000
    )
    batcher.start()
    return Server(model, limits, api_key, loaded=loaded, batcher=batcher)


def _architectures(model: str) -> set[str]:
    """The suffixes (ForSequenceClassification, ...) of the saved architectures; empty when unreadable
    (loading then reports the problem)."""
    import json
    from pathlib import Path

    try:
        archs = json.loads((Path(model) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return set()
    return {"For" + a.rsplit("For", 1)[1] for a in archs if isinstance(a, str) and "For" in a}


def _log_config() -> dict:
    """uvicorn's logging with the access log on stderr too (stdout carries results only)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    return config
