"""Collecting completions: a sink whose rows trickle in is asked at most every sink_flush_ms; a busy one at once."""

import asyncio
import time

from streamflow.budget import ErrorBudget
from streamflow.config import ErrorsConfig
from streamflow.runtime.row.completions import collect_completions
from streamflow.runtime.row.ledger import Ledger
from streamflow.runtime.row.recovery import Recovery
from streamflow.runtime.row.sink import _encode_completions

FULL = 64


class FakeSink:
    """Answers every completions call at once with ``per_call`` accepted rows; counts the calls."""

    def __init__(self, per_call: int) -> None:
        self.per_call = per_call
        self.calls = 0
        self.completions = self

    def remote(self, wait_s: float, retire: list[str]):
        async def answer() -> bytes:
            await asyncio.sleep(0)  # a Ray call always lets the loop run
            self.calls += 1
            accepted = [(f"r{self.calls}-{i}", f"r{self.calls}-{i}", 1, 1, "ok", 0.0) for i in range(self.per_call)]
            return _encode_completions(("incarnation", accepted, []))

        return answer()


def calls_in(seconds: float, per_call: int, every_s: float) -> int:
    async def go() -> int:
        sink = FakeSink(per_call)
        ledger = Ledger(1_000)
        collecting = asyncio.create_task(
            collect_completions(
                0, sink, 1, ledger, ErrorBudget(ErrorsConfig()), Recovery(ledger, lease_s=5.0, max_attempts=5),
                lambda actions: None, 0, time.monotonic, every_s, FULL,
            )
        )  # fmt: skip
        await asyncio.sleep(seconds)
        collecting.cancel()
        return sink.calls

    return asyncio.run(go())


def test_a_sink_whose_rows_trickle_in_is_asked_at_most_every_sink_flush_ms():
    assert calls_in(0.35, per_call=1, every_s=0.1) <= 5  # asked at 0, 0.1, 0.2, 0.3 s


def test_a_sink_answering_full_batches_is_asked_again_at_once():
    assert calls_in(0.35, per_call=FULL, every_s=0.1) >= 20
