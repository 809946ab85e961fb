"""Who is running a run directory, and what each attempt at the run did.

A run directory is worked on by one attempt after another: the first start, then each resume
(after a crash, a SIGTERM, a SLURM requeue). The attempt running now **claims** the
directory's ``data/`` (``data/.writer`` holds a claim id, the host, the pid and the attempt
number; sinks commit parts only under the claim their run started with) and keeps a
**heartbeat** in its record ``attempts/<n>.json``, rewritten every ``HEARTBEAT_S`` seconds with
its figures so far: input rows finished, LLM usage, wall time. So:

* a resume of a directory whose holder is alive (its heartbeat is younger than
  ``output.claim_stale_s``, and on this host its process exists) is refused before Ray starts;
* a holder whose claim was taken anyway (it looked dead: suspended, or a stalled file
  system held its heartbeat back) finds another claim at its next beat and stops;
* a resumed run's summary adds the earlier attempts' records up into whole-run figures. A
  record is as fresh as its last beat: an attempt that was killed loses the figures of its
  last ``HEARTBEAT_S`` seconds or so (plus what its actors had not yet reported).

Heartbeats compare wall clocks of the holder and of the resuming host: on a cluster, keep
``output.claim_stale_s`` well above the clock skew between nodes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

import msgspec

from streamflow.errors import ClaimLost, ConfigError
from streamflow.io.parts import claim_directory, read_claim
from streamflow.result import AttemptTotals
from streamflow.services.llm import Usage, merge_usage

__all__ = ["HEARTBEAT_S", "AttemptRecord", "RunAttempt", "earlier_totals", "read_attempts", "refuse_if_running"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
"""How often the attempt holding a run directory rewrites its record."""
ATTEMPTS_DIR = "attempts"


class AttemptRecord(msgspec.Struct, kw_only=True):
    """``attempts/<n>.json``: who ran attempt ``n`` of a run, its heartbeat and its figures so far."""

    attempt: int
    claim: str
    host: str
    pid: int
    started_at: float
    """Unix time the attempt claimed the directory."""
    heartbeat: float = 0.0
    """Unix time of its last beat; 0 once it ended."""
    ended: str = ""
    """How it ended (``finished``, ``stopped by SIGTERM``...); empty while it runs, or when it was killed."""
    wall_s: float = 0.0
    rows: int = 0
    """Input rows it finished."""
    usage: dict[str, Usage] = {}
    """Its LLM usage per step."""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(AttemptRecord).decode


class RunAttempt:
    """This process's attempt at a run: claims ``data/``, beats, records its figures, and notices a takeover."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.data_dir = os.path.join(run_dir, "data")
        self.earlier = read_attempts(run_dir)
        self.number = max((record.attempt for record in self.earlier), default=0) + 1
        self.claim = ""
        self.lost: str | None = None
        """Set (to the line saying who took it) once another run claimed the directory."""
        self._record: AttemptRecord | None = None
        self._started = 0.0
        self._figures: tuple[int, Mapping[str, Usage]] = (0, {})
        self._stopped = threading.Event()
        self._beating: threading.Thread | None = None

    def begin(self) -> None:
        """Write this attempt's record, claim ``data/`` and start beating (a daemon thread)."""
        os.makedirs(os.path.join(self.run_dir, ATTEMPTS_DIR), exist_ok=True)
        self._started = time.monotonic()
        now = time.time()
        self._record = AttemptRecord(
            attempt=self.number,
            claim=os.urandom(16).hex(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            heartbeat=now,
        )
        self._write(self._record)  # the heartbeat is there before the claim that points at it
        self.claim = claim_directory(
            self.data_dir,
            {"host": self._record.host, "pid": self._record.pid, "attempt": self.number},
            claim=self._record.claim,
        )
        self._beating = threading.Thread(target=self._beat, name="streamflow-heartbeat", daemon=True)
        self._beating.start()

    def report(self, rows: int, usage: Mapping[str, Usage]) -> None:
        """This attempt's figures so far (input rows finished, LLM usage per step); the next beat records them."""
        self._figures = (rows, usage)

    def check(self) -> None:
        """Raise ``ClaimLost`` once another run has claimed the directory."""
        if self.lost is not None:
            raise ClaimLost(self.lost)

    def end(self, how: str) -> None:
        """Stop beating and record how the attempt ended, so a resume need not wait for the heartbeat to go stale."""
        self._stopped.set()
        if self._beating is not None:
            self._beating.join()
        if self._record is not None:
            self._record.ended = how
            self._update(heartbeat=0.0)

    def _beat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            try:
                holder = read_claim(self.data_dir)
                if holder is None or holder.get("claim") != self.claim:
                    self.lost = _taken(self.run_dir, self.number, holder)
                    return
                self._update(heartbeat=time.time())
            except OSError as exc:  # a file system hiccup: the next beat tries again
                log.warning("could not record the heartbeat of %s: %s", self.run_dir, exc)

    def _update(self, *, heartbeat: float) -> None:
        assert self._record is not None
        rows, usage = self._figures
        record = self._record
        record.heartbeat = heartbeat
        record.wall_s = time.monotonic() - self._started
        record.rows = rows
        record.usage = dict(usage)
        self._write(record)

    def _write(self, record: AttemptRecord) -> None:
        path = _record_path(self.run_dir, record.attempt)
        temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(_encode(record))
        os.replace(temporary, path)


def read_attempts(run_dir: str) -> list[AttemptRecord]:
    """The records of the attempts at the run in ``run_dir``, in order (unreadable ones are skipped, with a warning)."""
    folder = os.path.join(run_dir, ATTEMPTS_DIR)
    if not os.path.isdir(folder):
        return []
    records = []
    for name in os.listdir(folder):
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            with open(os.path.join(folder, name), "rb") as handle:
                records.append(_decode(handle.read()))
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("skipping the unreadable attempt record %s: %s", os.path.join(folder, name), exc)
    return sorted(records, key=lambda record: record.attempt)


def earlier_totals(records: list[AttemptRecord]) -> AttemptTotals:
    """The figures of ``records`` added up: what the attempts before this one did."""
    return AttemptTotals(
        attempts=len(records),
        rows=sum(record.rows for record in records),
        wall_s=sum(record.wall_s for record in records),
        usage=merge_usage([record.usage for record in records]),
    )


def refuse_if_running(run_dir: str, stale_s: float) -> None:
    """ConfigError naming the holder when an attempt that is still alive holds ``run_dir``.

    Alive: its record's heartbeat is younger than ``stale_s`` and, when it runs on this host,
    its process exists (a driver killed with SIGKILL leaves a fresh heartbeat behind).
    """
    holder = read_claim(os.path.join(run_dir, "data"))
    if holder is None or not isinstance(holder.get("attempt"), int):
        return
    try:
        with open(_record_path(run_dir, holder["attempt"]), "rb") as handle:
            record = _decode(handle.read())
    except (OSError, msgspec.DecodeError):
        return
    age = time.time() - record.heartbeat
    if record.claim != holder["claim"] or not record.heartbeat or age > stale_s:
        return
    if record.host == socket.gethostname() and not _process_exists(record.pid):
        return
    msg = (
        f"config: resume={run_dir} is still running: attempt {record.attempt} on {record.host} "
        f"(pid {record.pid}) holds it, its heartbeat {max(age, 0):.0f} s old; let it finish or stop it "
        f"(kill -TERM {record.pid} on {record.host}), then resume. "
        f"A holder silent for {stale_s:g} s (output.claim_stale_s) counts as dead."
    )
    raise ConfigError(msg)


def _taken(run_dir: str, attempt: int, holder: Mapping[str, object] | None) -> str:
    if holder is None:
        who = "its claim was removed"
    else:
        who = f"attempt {holder.get('attempt', '?')} on {holder.get('host', '?')} (pid {holder.get('pid', '?')}) claimed it"
    return (
        f"another run took over {run_dir} while attempt {attempt} ran ({who}, taking this one for dead); "
        "this attempt stops and commits nothing more, the other one continues the run"
    )


def _record_path(run_dir: str, attempt: int) -> str:
    return os.path.join(run_dir, ATTEMPTS_DIR, f"{attempt}.json")


def _process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # no /proc here: the signal test said it exists
        return True
