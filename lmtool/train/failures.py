"""One rank's failure ends the whole job within seconds, with that rank's error in every rank's output.

Without this, a rank that raises or dies leaves the others blocked in their next collective until its
timeout (an hour by default; gloo notices a closed connection, nccl does not), and under `srun` without
`--kill-on-bad-exit` they never exit. Each rank runs a `PeerWatch`: a daemon thread that sleeps on the
c10d store (no per-step collective). A rank whose exception reaches `run_on_every_rank` appends its
rank, exit code and one-line error to the store's `failures` key; the other ranks' watchers see it at
their next poll and, unless their own main thread is stopping too within GRACE_S (all ranks raising the
same config error or agreeing to stop), print `error: rank R failed: <line>` and leave with `os._exit`
(a thread blocked in a collective cannot be woken otherwise). The failing rank waits up to EXIT_WAIT_S
for the others to stop or leave: when all stopped alike it leaves the group in order and its error goes
on to the CLI, otherwise it prints its line and exits at once. Every watcher bumps a heartbeat key each
poll; rank 0 declares a peer whose count has not moved for DEAD_AFTER_S dead ("stopped responding").

A collective that waits past `train.distributed.timeout` raises in the waiting thread (gloo; nccl's
watchdog aborts the process instead, and its peers then see it stop responding): `describe` names the
step (`whereabouts`, kept by the engine) and the phase (from where the traceback stopped).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from types import TracebackType

import torch.distributed as dist

from lmtool import console
from lmtool.errors import EXIT_INTERNAL, EXIT_INTERRUPTED
from lmtool.train import distributed

POLL_S = 1.0  # watcher period: heartbeat, and the check for a failed peer
GRACE_S = 2.0  # how long a rank that sees a peer fail waits for its own main thread to stop alike
DEAD_AFTER_S = 15.0  # a heartbeat that has not moved for this long: the rank is dead or frozen
EXIT_WAIT_S = POLL_S + GRACE_S + 2.0  # how long a failing rank waits for the others to stop or leave

STOPPED_RESPONDING = "stopped responding (killed? out of memory?)"
_TIMEOUT = re.compile(r"timed out|timeout", re.IGNORECASE)
_PHASES = {  # the engine function a collective waited in → what the job was doing
    "_accumulate": "loss all-reduce",
    "_optimizer_step": "optimizer step",
    "_evaluate": "evaluation",
    "_validate": "evaluation",
    "_save_full": "checkpoint save",  # train/saving.py's Saver
    "_save_sharded": "checkpoint save",
    "finish_pending": "checkpoint save",
    "restore": "resume",
    "write_final": "final model",
    "_open_run_dir": "run start",
}


@dataclass
class Whereabouts:
    """The step the engine is on (None before training), for messages about a collective that hung."""

    step: int | None = None


whereabouts = Whereabouts()


def one_line(exc: BaseException) -> str:
    """The error as `lmtool` prints it: the message of an LmtoolError, the type and first line otherwise."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if getattr(exc, "exit_code", EXIT_INTERNAL) != EXIT_INTERNAL:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return getattr(exc, "exit_code", EXIT_INTERNAL)


def phase(tb: TracebackType | None) -> str:
    """What the job was doing where `tb` stopped: the innermost engine function, or the gradient all-reduce
    when it stopped inside a backward pass."""
    frames = traceback.extract_tb(tb)
    ours = [i for i, f in enumerate(frames) if f.name in _PHASES]
    if not ours:
        return "collective"
    deeper = frames[ours[-1] + 1 :]
    if any(f.name == "backward" for f in deeper):
        return "gradient all-reduce"
    return _PHASES[frames[ours[-1]].name]


def describe(exc: BaseException, timeout: float) -> str:
    """The one-line error of this rank; a collective timeout (a RuntimeError from gloo, a DistBackendError
    from nccl) becomes a sentence naming the step."""
    line = one_line(exc)
    if not isinstance(exc, RuntimeError) or not _TIMEOUT.search(line):
        return line
    step = whereabouts.step
    where = f"at step {step}" if step is not None else "before training started"
    return (
        f"a collective ({phase(exc.__traceback__)}) waited more than {timeout:g} s {where} "
        "(train.distributed.timeout); another rank is stuck or dead"
    )


class Heartbeats:
    """Rank 0's view of its peers' heartbeat counters: a counter that has not moved between two reads
    DEAD_AFTER_S apart belongs to a dead (or frozen) rank. Judged by this rank's own reads, so a watcher
    that was itself starved for a while does not take its peers for dead."""

    def __init__(self, dead_after: float = DEAD_AFTER_S):
        self.dead_after = dead_after
        self._seen: dict[int, tuple[int, float]] = {}  # rank → (counter, when it last moved)

    def dead(self, counters: dict[int, int], now: float) -> list[int]:
        stale = []
        for rank, count in counters.items():
            last = self._seen.get(rank)
            if last is None or last[0] != count:
                self._seen[rank] = (count, now)
            elif now - last[1] > self.dead_after:
                stale.append(rank)
        return stale


def blame(record: tuple[int, str, str]) -> str:
    """The line a rank prints when it stops because of another rank's failure record."""
    rank, kind, text = record
    return f"rank {rank} {STOPPED_RESPONDING}" if kind == "dead" else f"rank {rank} failed: {text}"


def _cause(records: list[tuple[int, str, str]], i: int) -> tuple[int, str, str] | None:
    """The earlier record of another rank that record i (a bug-class error: lmtool errors and agreed stops
    keep their own message) is a consequence of, if any; the same error on every rank is no one's cause."""
    if i >= len(records) or records[i][1] != str(EXIT_INTERNAL):
        return None
    rank, _, text = records[i]
    return next((r for r in records[:i] if r[0] != rank and r[2] != text), None)


def _records(raw: bytes) -> list[tuple[int, str, str]]:
    """(rank, kind, text) from the store's newline-separated `rank\\tkind\\ttext` records."""
    out = []
    for line in raw.decode(errors="replace").splitlines():
        rank, kind, text = (line.split("\t", 2) + ["", ""])[:3]
        if rank.isdigit():
            out.append((int(rank), kind, text))
    return out


class PeerWatch:
    """This rank's watcher thread and its part of the failure protocol (see the module docstring)."""

    def __init__(self, store: dist.Store, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self._store = store  # the main thread's client
        self._thread_store = store.clone()  # the watcher's own connection
        self._stop = threading.Event()
        self.stopping = False  # the main thread is leaving: it decides, the watcher only beats
        self._beats = Heartbeats()
        self._peer_failed_at: float | None = None
        self._exiting = threading.Lock()  # one thread decides how this rank ends; it never lets go
        self._thread = threading.Thread(target=self._run, name="lmtool-peer-watch", daemon=True)

    @classmethod
    def start(cls, world_size: int, rank: int) -> PeerWatch | None:
        """Watch the peers of this process group (None for one process)."""
        if world_size < 2 or not dist.is_initialized():
            return None
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"lmtool-failures/{restart}/", dist.distributed_c10d._get_default_store())
        watch = cls(store, rank, world_size)
        watch._thread.start()
        return watch

    # ------------------------------------------------------------------ the watcher thread

    def _run(self) -> None:
        store = self._thread_store
        while not self._stop.wait(POLL_S):
            try:
                store.add(f"beat/{self.rank}", 1)
                if self.stopping:
                    continue
                if self.rank == 0:
                    self._judge_heartbeats(store)
                if store.check(["failures"]):
                    self._peer_failed(store)
            except Exception as exc:  # noqa: BLE001 - the store's host (rank 0 or the launcher) is gone
                if self._stop.is_set() or self.stopping:
                    return
                self._leave(
                    store, f"lost the job's rendezvous store ({one_line(exc)}): rank 0 or the launcher died"
                )

    def _judge_heartbeats(self, store: dist.Store) -> None:
        peers = [r for r in range(self.world_size) if r != 0]
        counters = (
            [int(v) for v in store.multi_get([f"beat/{r}" for r in peers])] if self._seen_all(store) else []
        )
        dead = self._beats.dead(dict(zip(peers, counters, strict=False)), time.monotonic())
        accounted = (
            {r for r, _, _ in _records(store.get("left"))} if dead and store.check(["left"]) else set()
        )
        dead = [r for r in dead if r not in accounted]
        if dead:
            store.append("failures", f"{dead[0]}\tdead\t{STOPPED_RESPONDING}\n")

    def _seen_all(self, store: dist.Store) -> bool:
        return store.check([f"beat/{r}" for r in range(1, self.world_size)])

    def _peer_failed(self, store: dist.Store) -> None:
        now = time.monotonic()
        if self._peer_failed_at is None:
            self._peer_failed_at = now
        if now - self._peer_failed_at < GRACE_S:
            return  # this rank may be about to stop for the same reason
        records = [r for r in _records(store.get("failures")) if r[0] != self.rank]
        if records and not self.stopping:
            self._leave(store, blame(records[0]))

    def _leave(self, store: dist.Store, message: str) -> None:
        """Print why and exit at once (exit 1): the main thread may be blocked in a collective."""
        self._exiting.acquire()  # blocks for good if the main thread is already handling its own error
        console.error(message)
        try:
            store.append("left", f"{self.rank}\tleft\t{message}\n")
        finally:
            sys.stdout.flush()
            if self.rank == 0:
                time.sleep(0.5)  # rank 0 may host the store: let the failing rank read that it left
            os._exit(EXIT_INTERNAL)

    # ------------------------------------------------------------------ the main thread

    def fail(self, exc: BaseException, timeout: float) -> tuple[bool, str]:
        """Publish this rank's error and wait (at most EXIT_WAIT_S) for every rank to stop or leave.

        Returns (orderly, line): orderly when every other rank stopped by itself (an agreed stop: the
        group can be left with a barrier and the exception re-raised); otherwise `line` is what this
        rank must print before it exits at once: its own error, the root cause when a peer failed first
        and this rank's error is a consequence (a bug-class error only: lmtool errors keep their own), or
        the ranks that never answered."""
        self.stopping = True
        self._exiting.acquire()  # blocks until os._exit if the watcher is already ending this rank
        line = describe(exc, timeout)
        store, records, gone = self._store, [], {}
        try:
            store.append("failures", f"{self.rank}\t{exit_code(exc)}\t{line}\n")
            store.append("left", f"{self.rank}\tstopped\t\n")
            deadline = time.monotonic() + EXIT_WAIT_S
            while len(gone) < self.world_size and time.monotonic() < deadline:
                time.sleep(0.1)
                gone = {r: kind for r, kind, _ in _records(store.get("left"))}
            records = _records(store.get("failures"))
        except Exception:  # noqa: BLE001 - the store's host left (rank 0 stopping for this failure, or dead)
            gone = dict.fromkeys(range(self.world_size), "left") | {self.rank: "stopped"}
        mine = next((i for i, r in enumerate(records) if r[0] == self.rank), len(records))
        cause = _cause(records, mine)
        if cause is not None:  # e.g. gloo's "Connection closed by peer" after that peer's own error
            return False, blame(cause)
        stopped = all(gone.get(r) in ("stopped", "done") for r in range(self.world_size))
        if stopped and all(_cause(records, i) is None for i in range(len(records))):
            return True, line
        silent = [r for r in range(self.world_size) if r not in gone]
        if silent and exit_code(exc) == EXIT_INTERNAL:
            names = ", ".join(map(str, silent))
            return False, f"rank {names} {STOPPED_RESPONDING}; rank {self.rank} then failed: {line}"
        return False, line if self.rank == 0 else f"rank {self.rank}: {line}"

    def close(self) -> None:
        """A normal end (or an orderly stop): stop the thread before the group is left."""
        self.stopping = True
        self._stop.set()
        self._thread.join(timeout=2 * POLL_S)
        with contextlib.suppress(Exception):  # the group is being left anyway
            self._store.append("left", f"{self.rank}\tdone\t\n")


def leave_on_failure(watch: PeerWatch | None, exc: BaseException, timeout: float) -> None:
    """What a rank does with an exception out of its recipe. Returns when the exception should go on to
    the CLI (one process; or an agreed stop: every rank stopped alike and the group was left in order);
    otherwise prints this rank's line and exits at once with its code (its peers are gone or leaving, so
    the group cannot be left in order: a barrier could hang and a teardown could abort)."""
    console.log_exception(exc)
    if watch is None:
        if not isinstance(exc, KeyboardInterrupt):  # a second Ctrl-C means now: no waiting for a save
            distributed.shutdown()
        return
    orderly, line = watch.fail(exc, timeout)
    if orderly:
        watch.close()
        distributed.shutdown()
        return
    console.error(line)
    sys.stdout.flush()
    os._exit(exit_code(exc))
