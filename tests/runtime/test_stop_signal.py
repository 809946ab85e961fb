"""SIGTERM (scancel, a SLURM time limit, kill) and SIGINT (Ctrl-C) stop a row-mode run cleanly: what the sinks hold is committed."""

import asyncio
import os
import signal

import pytest

from streamflow.errors import Interrupted
from streamflow.runtime.row.watch import stream_until_stopped


class FakeSink:
    def __init__(self):
        self.flushed = 0
        self.flush = self  # sink.flush.remote() as on an actor handle

    async def _flush(self):
        self.flushed += 1

    def remote(self):
        return self._flush()


class StreamingForever:
    """A driver whose rows never finish, with two sinks."""

    def __init__(self):
        self.run_dir = "/runs/nr/slurm-7"
        self.sinks = [FakeSink(), FakeSink()]
        self.cancelled = False

    async def stream(self):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def previous_handler(signum, frame):
    """Stands for the handler the process had before the run (Ray installs one in a driver)."""


@pytest.fixture(autouse=True)
def earlier_handler():
    before = {signum: signal.signal(signum, previous_handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_streaming_commits_the_sinks_and_names_the_resume(signum):
    driver = StreamingForever()

    async def scenario():
        stopping = asyncio.ensure_future(stream_until_stopped(driver))
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signum)
        await stopping

    with pytest.raises(Interrupted) as stopped:
        asyncio.run(scenario())
    assert driver.cancelled and [sink.flushed for sink in driver.sinks] == [1, 1]
    assert stopped.value.signum == signum
    name = signal.Signals(signum).name
    assert str(stopped.value) == f"stopped by {name}; committed rows are kept, continue with resume=/runs/nr/slurm-7"
    assert signal.getsignal(signum) is previous_handler  # the run's handler is gone with it


def test_a_run_that_finishes_gives_the_process_its_handler_back():
    class Finishing(StreamingForever):
        async def stream(self):
            return None

    asyncio.run(stream_until_stopped(Finishing()))
    assert signal.getsignal(signal.SIGTERM) is previous_handler
