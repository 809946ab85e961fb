"""The error budget: a run whose recent rows mostly fail stops early instead of failing every row.

A server answering 500 to everything, a wrong model name, a bug in an operator: each row then
fails after its retries, and a run of a million rows would spend hours writing ``error:*``
rows. The budget looks at the last ``errors.window`` finished rows; once more than
``errors.max_share`` of them failed, both modes stop as on SIGTERM (the rows already finished
are committed) and the command exits 3 with one line naming the dominant error. Before the
window has filled the run goes on, so a few bad rows at the start never stop it; a run that
ends before that is judged on all its rows.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping

from streamflow.config import ErrorsConfig

__all__ = ["ErrorBudget", "first_line"]

SAMPLE_CHARS = 300
"""An error message quoted in the stop line is cut to this many characters."""


class ErrorBudget:
    """The statuses of the last ``window`` finished rows, and whether errors dominate them."""

    def __init__(self, config: ErrorsConfig) -> None:
        self.window = config.window
        self.max_share = config.max_share
        self._recent: deque[str] = deque()
        self._errors: Counter[str] = Counter()

    def add(self, status: str) -> None:
        """One more row finished with ``status``."""
        recent = self._recent
        if len(recent) == self.window:
            old = recent.popleft()
            if old.startswith("error:"):
                self._errors[old] -= 1
        recent.append(status)
        if status.startswith("error:"):
            self._errors[status] += 1

    def over(self, *, final: bool = False) -> bool:
        """True when more than ``max_share`` of the window failed; before it is full, only at the end (``final``)."""
        seen = len(self._recent)
        if self.max_share >= 1 or seen == 0 or (seen < self.window and not final):
            return False
        return self.failed > self.max_share * seen

    @property
    def failed(self) -> int:
        """Error rows in the window."""
        return sum(self._errors.values())

    def describe(self, samples: Mapping[str, str]) -> str:
        """What went wrong, in words: errors in the window, the dominant kind, one of its messages from ``samples``."""
        kind, count = self._errors.most_common(1)[0]
        sample = samples.get(kind)
        quoted = f" ({sample!r})" if sample else ""
        return (
            f"{self.failed:,} of the last {len(self._recent):,} finished rows failed "
            f"(errors.max_share={self.max_share:g}), {count:,} of them as {kind}{quoted}"
        )


def first_line(error: str | None) -> str:
    """The first line of a row's error text (its message; the traceback follows), cut to ``SAMPLE_CHARS``."""
    line = (error or "").strip().split("\n", 1)[0]
    return line if len(line) <= SAMPLE_CHARS else line[: SAMPLE_CHARS - 3] + "..."
