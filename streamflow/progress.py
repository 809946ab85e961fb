"""Progress of a run: a rich bar on a terminal, periodic log lines otherwise.

It is fed counts by the driver's own loop, never by the actors, so it cannot hang when
an actor dies: the driver notices the death and stops the bar with the error.
"""

from __future__ import annotations

import logging
import sys
import time

import msgspec

__all__ = ["Progress", "Snapshot"]

log = logging.getLogger("streamflow.progress")


class Snapshot(msgspec.Struct):
    """Counts at one moment of the run."""

    done: int
    ok: int
    filtered: int
    errors: int
    inflight: int
    completion_tokens: int


class Progress:
    """Shows ``Snapshot``s; ``mode`` is auto | bar | log | off."""

    def __init__(self, total: int, *, mode: str = "auto", log_every_s: float = 10.0) -> None:
        self.total = total
        self.started = time.monotonic()
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self._log_every_s = log_every_s
        self._last_log = self.started
        self._bar = None
        self._task = None
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]rows"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("rows", total=total, detail="")

    def update(self, snap: Snapshot) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        detail = (
            f"ok {snap.ok} · filtered {snap.filtered} · errors {snap.errors} · in flight {snap.inflight} · "
            f"{snap.done / elapsed:,.1f} rows/s · {snap.completion_tokens / elapsed:,.0f} tok/s"
        )
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=snap.done, detail=detail)
        elif self.mode == "log" and time.monotonic() - self._last_log >= self._log_every_s:
            self._last_log = time.monotonic()
            eta = (self.total - snap.done) * elapsed / snap.done if snap.done else float("nan")
            log.info("%d/%d rows · %s · eta %.0f s", snap.done, self.total, detail, eta)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
