"""What a run returns and prints: counts per status, tokens, throughput, where the output is."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from streamflow.histogram import LatencyHistogram
from streamflow.io.source import Unreadable
from streamflow.services.llm import Usage, merge_usage

__all__ = ["AttemptTotals", "RunResult", "TransferStats"]


class TransferStats(msgspec.Struct):
    """Bytes one process moved: rows sent inline, values put in and fetched from the object store."""

    inline_bytes: int = 0
    offloaded_bytes: int = 0
    offloaded_objects: int = 0
    fetched_bytes: int = 0
    fetched_remote_bytes: int = 0
    """Fetched values that were put on another node (each counted per fetching actor: an upper bound
    on what Ray copied between nodes, since it copies an object once per node)."""

    def add(self, other: TransferStats) -> None:
        for name in self.__struct_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class AttemptTotals(msgspec.Struct):
    """What earlier attempts at a resumed run did, added up from their records (``streamflow.attempts``)."""

    attempts: int = 0
    rows: int = 0
    """Input rows they finished."""
    wall_s: float = 0.0
    usage: dict[str, Usage] = {}


class RunResult(msgspec.Struct, kw_only=True):
    """The outcome of one run. ``statuses`` counts output rows by status.

    ``rows_read`` counts every input row of the run, including the rows of ``unreadable``
    ranges, which have no output row; ``rows_done`` counts the input rows that finished.
    Rows and statuses count the whole run; ``usage``, ``wall_s`` and the rates count this
    attempt (a resumed run continues earlier ones: ``earlier``, and the ``run_*`` figures add them).
    """

    pipeline: str
    run_id: str
    run_dir: str
    files: list[str]
    rows_read: int
    statuses: dict[str, int]
    usage: dict[str, Usage]
    wall_s: float
    rows_done: int = 0
    latency: LatencyHistogram = msgspec.field(default_factory=LatencyHistogram)
    replica_usage: dict[str, Usage] = {}
    lost_replicas: list[str] = []
    readmitted: int = 0
    """Rows sent through the pipeline again because the actor holding them died."""
    restarts: int = 0
    """Operator and sink actors Ray restarted during the run."""
    phases_s: dict[str, float] = {}
    """Seconds spent starting (Ray, services, actors), streaming rows, and finishing (stopping actors)."""
    metrics_url: str | None = None
    transfer: TransferStats = msgspec.field(default_factory=TransferStats)
    """Bytes rows took between actors: inline in batches, and through the object store."""
    objects_alive_peak: int = 0
    """Most offloaded objects alive at once (sampled every second; 0 when nothing was offloaded)."""
    quality: dict[str, float] = {}
    """The pipeline's own figures over its whole output (its ``metrics`` function), e.g. agreement correctness."""
    unreadable: list[Unreadable] = []
    """Input ranges that could not be read at all (a Parquet row group that does not decode)."""
    attempt: int = 1
    """Which attempt at the run this was: 1 for its first start, one more for each resume."""
    committed_before: int = 0
    """Input rows already committed when this attempt started (a resume skips them)."""
    earlier: AttemptTotals = msgspec.field(default_factory=AttemptTotals)
    """What earlier attempts at this run did, from their records (nothing for a first start)."""

    @property
    def data_dir(self) -> str:
        """The folder holding the Parquet parts (read it with ``polars.read_parquet(dir + '/*.parquet')``)."""
        return f"{self.run_dir}/data"

    @property
    def ok(self) -> int:
        return self.statuses.get("ok", 0)

    @property
    def filtered(self) -> dict[str, int]:
        """Filtered rows per reason."""
        return _by_prefix(self.statuses, "filtered:")

    @property
    def errors(self) -> dict[str, int]:
        """Error rows per kind."""
        return _by_prefix(self.statuses, "error:")

    @property
    def rows_out(self) -> int:
        return sum(self.statuses.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(u.prompt_tokens for u in self.usage.values())

    @property
    def completion_tokens(self) -> int:
        return sum(u.completion_tokens for u in self.usage.values())

    @property
    def unreadable_rows(self) -> int:
        """Input rows in ranges that could not be read: counted in ``rows_read``, with no output row."""
        return sum(part.rows for part in self.unreadable)

    @property
    def resumed(self) -> bool:
        """True when this attempt continued an earlier one (rows were committed before it, or attempts recorded)."""
        return self.attempt > 1 or self.committed_before > 0

    @property
    def rows_this_attempt(self) -> int:
        """Input rows this attempt read (the others were committed before it started)."""
        return self.rows_read - self.committed_before

    @property
    def rows_per_s(self) -> float:
        """Input rows per second of this attempt's wall time."""
        return self.rows_this_attempt / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Output (completion) tokens per second of this attempt's wall time."""
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def run_usage(self) -> dict[str, Usage]:
        """LLM usage per step over every attempt at the run."""
        return merge_usage([self.usage, self.earlier.usage])

    @property
    def run_prompt_tokens(self) -> int:
        return self.prompt_tokens + sum(u.prompt_tokens for u in self.earlier.usage.values())

    @property
    def run_completion_tokens(self) -> int:
        return self.completion_tokens + sum(u.completion_tokens for u in self.earlier.usage.values())

    @property
    def run_wall_s(self) -> float:
        """Wall time of every attempt at the run, added up (the time between attempts is not counted)."""
        return self.wall_s + self.earlier.wall_s

    @property
    def run_rows_per_s(self) -> float:
        """Input rows of the whole run per second of every attempt's wall time."""
        return self.rows_read / self.run_wall_s if self.run_wall_s > 0 else 0.0

    @property
    def balanced(self) -> bool:
        """The ledger invariant: every row read was completed, each output row as ok, filtered or error,
        or lies in an unreadable range.

        Without fan-out this is ``read == ok + filtered + error + unreadable``; a row that fanned
        out into pieces is complete when all its pieces are, and each piece has its own status.
        """
        outcomes = self.ok + sum(self.filtered.values()) + sum(self.errors.values())
        finished = self.rows_read - self.unreadable_rows
        return self.rows_done == finished and outcomes == self.rows_out >= finished

    def summary(self) -> dict[str, object]:
        """The headline numbers as plain data (for the manifest and for notebooks).

        Rows, tokens, wall time and rates are the whole run's (every attempt); ``this_attempt``
        has the figures of this attempt alone. Latencies, restarts and transfers are this attempt's.
        """
        run_usage = self.run_usage.values()
        run_wall_s = self.run_wall_s
        return {
            "rows_read": self.rows_read,
            "ok": self.ok,
            "filtered": self.filtered,
            "errors": self.errors,
            "unreadable_rows": self.unreadable_rows,
            "unreadable": msgspec.to_builtins(self.unreadable),
            "prompt_tokens": self.run_prompt_tokens,
            "completion_tokens": self.run_completion_tokens,
            "wall_s": round(run_wall_s, 3),
            "rows_out": self.rows_out,
            "rows_per_s": round(self.run_rows_per_s, 2),
            "latency_p50_s": round(self.latency.quantile(0.5), 3),
            "latency_p99_s": round(self.latency.quantile(0.99), 3),
            "tokens_per_s": round(self.run_completion_tokens / run_wall_s if run_wall_s > 0 else 0.0, 2),
            "attempts": self.attempt,
            "this_attempt": {
                "attempt": self.attempt,
                "rows_read": self.rows_this_attempt,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "wall_s": round(self.wall_s, 3),
                "rows_per_s": round(self.rows_per_s, 2),
                "tokens_per_s": round(self.tokens_per_s, 2),
            },
            "llm_requests": sum(u.requests for u in run_usage),
            "llm_retries": sum(u.retries for u in run_usage),
            "llm_cache_hits": sum(u.cache_hits for u in run_usage),
            "llm_replicas_lost": len(self.lost_replicas),
            "actor_restarts": self.restarts,
            "rows_readmitted": self.readmitted,
            "phases_s": {phase: round(seconds, 3) for phase, seconds in self.phases_s.items()},
            "transfer": msgspec.to_builtins(self.transfer),
            "objects_alive_peak": self.objects_alive_peak,
        }


def _by_prefix(statuses: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {status[len(prefix) :]: n for status, n in sorted(statuses.items()) if status.startswith(prefix)}
