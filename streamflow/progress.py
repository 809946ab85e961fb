"""Progress of a run: a rich bar on a terminal, periodic log lines otherwise.

It is fed counts by the driver's own loop, never by the actors, so it cannot hang when
an actor dies: the driver notices the death and stops the bar with the error.

Rates and the ETA come from the last minute, not from the average since the start: in a
filtering pipeline the rows dropped by the first cheap step finish first and fast, the rows
that go through every LLM step finish last, so the average since the start promises an end
far too early (NaturalReasoning: "eta 9 s" at 1,028 of 2,000 rows, 46 s before the end). The
ETA says it is rough while it cannot be better: during the first minute, while few rows
finish per minute, and once every remaining row is in flight (the run drains: the rows still
going are the slow ones, and throughput falls until the end).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable

import msgspec
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

__all__ = ["Eta", "Progress", "Rates", "RecentRates", "Snapshot", "describe", "estimate_eta", "format_eta"]

log = logging.getLogger("streamflow.progress")

WINDOW_S = 60.0
"""Rates and the ETA are measured over this many seconds (the last minute)."""
MIN_ROWS_IN_WINDOW = 50
"""Fewer rows finished in the window than this make the ETA rough."""


class Snapshot(msgspec.Struct):
    """Counts at one moment of the run (cumulative since the run, or this resume, started)."""

    done: int
    ok: int
    filtered: int
    errors: int
    inflight: int
    prompt_tokens: int
    completion_tokens: int


class Rates(msgspec.Struct, frozen=True):
    """Per-second rates over the last minute (since the start, in the first minute)."""

    rows: float
    prompt_tokens: float
    completion_tokens: float
    rows_in_span: int


class Eta(msgspec.Struct, frozen=True):
    """Seconds left (None: nothing finished lately to measure) and whether the figure is rough."""

    seconds: float | None
    rough: bool


class RecentRates:
    """Rates over the last ``window_s`` seconds, from snapshots taken at known times."""

    def __init__(self, started: float, window_s: float = WINDOW_S) -> None:
        self.started = started
        self.window_s = window_s
        zero = Snapshot(done=0, ok=0, filtered=0, errors=0, inflight=0, prompt_tokens=0, completion_tokens=0)
        self._samples: deque[tuple[float, Snapshot]] = deque([(started, zero)])

    def add(self, at: float, snap: Snapshot) -> None:
        """Record ``snap`` taken at ``at``; keeps one sample at or before the window's start."""
        self._samples.append((at, snap))
        while len(self._samples) > 2 and self._samples[1][0] <= at - self.window_s:
            self._samples.popleft()

    def rates(self) -> Rates:
        """Rows and LLM tokens per second between the oldest kept sample and the newest."""
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        span = last_at - first_at
        if span <= 0:
            return Rates(0.0, 0.0, 0.0, 0)
        return Rates(
            rows=(last.done - first.done) / span,
            prompt_tokens=(last.prompt_tokens - first.prompt_tokens) / span,
            completion_tokens=(last.completion_tokens - first.completion_tokens) / span,
            rows_in_span=last.done - first.done,
        )


def estimate_eta(total: int, snap: Snapshot, rates: Rates, elapsed_s: float, window_s: float = WINDOW_S) -> Eta:
    """Seconds until every row is done at the last minute's pace; rough in the first minute,
    with few rows in the window, or once every remaining row is in flight (the run drains)."""
    remaining = max(total - snap.done, 0)
    rough = elapsed_s < window_s or rates.rows_in_span < MIN_ROWS_IN_WINDOW or remaining <= snap.inflight
    if remaining == 0:
        return Eta(0.0, False)
    if rates.rows <= 0:
        return Eta(None, True)
    return Eta(remaining / rates.rows, rough)


def describe(snap: Snapshot, rates: Rates) -> str:
    """Statuses, rows in flight and the last minute's rates of rows and LLM tokens."""
    share = f" ({snap.ok / snap.done:.1%})" if snap.done else ""
    return (
        f"ok {snap.ok:,}{share} · filtered {snap.filtered:,} · errors {snap.errors:,} · "
        f"in flight {snap.inflight:,} · last min: {rates.rows:,.1f} rows/s, "
        f"LLM {rates.prompt_tokens:,.0f} in + {rates.completion_tokens:,.0f} out tok/s"
    )


def format_eta(eta: Eta) -> str:
    """``4 min``, ``~4 min (rough)``, or why there is no figure."""
    if eta.seconds is None:
        return "unknown (no row finished in the last minute)"
    text = _duration(eta.seconds)
    return f"~{text} (rough)" if eta.rough else text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Shows ``Snapshot``s; ``mode`` is auto | bar | log | off. ``clock`` and ``console`` are for tests."""

    def __init__(
        self,
        total: int,
        *,
        mode: str = "auto",
        log_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        console: Console | None = None,
    ) -> None:
        self.total = total
        self._clock = clock
        self.started = clock()
        self.recent = RecentRates(self.started)
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self._log_every_s = log_every_s
        self._last_log = self.started
        self._bar = None
        self._task = None
        if mode == "bar":
            self._bar = _TwoLineBar(
                TextColumn("[bold]rows"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("eta {task.fields[eta]}"),
                console=console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("rows", total=total, detail="", eta="")

    def update(self, snap: Snapshot) -> None:
        now = self._clock()
        self.recent.add(now, snap)
        rates = self.recent.rates()
        detail = describe(snap, rates)
        eta = format_eta(estimate_eta(self.total, snap, rates, now - self.started))
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=snap.done, detail=detail, eta=eta)
        elif self.mode == "log" and now - self._last_log >= self._log_every_s:
            self._last_log = now
            log.info("%s/%s rows · %s · eta %s", f"{snap.done:,}", f"{self.total:,}", detail, eta)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _TwoLineBar(RichProgress):
    """The bar and ETA on one line, the counts and rates below: a narrow terminal wraps them, cuts nothing."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Text(task.fields.get("detail", ""))
