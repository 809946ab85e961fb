"""The response cache: an identical request is answered from disk, per row and in order, and replicas
starting together share one fresh cache file."""

import asyncio

from streamflow.services.llm import LLMClient
from streamflow.services.llm.cache import ResponseCache
from streamflow.testing import ScriptedTransport


def test_cache_answers_an_identical_request_without_calling_the_server(tmp_path):
    transport = ScriptedTransport(lambda p: "fresh answer")

    def client():
        return LLMClient(["http://x/v1"], model="m", transport=transport, cache=ResponseCache(str(tmp_path / "c.db")))

    async def ask(c, seed):
        try:
            return await c.chat([{"role": "user", "content": "hi"}], step="s", seed=seed)
        finally:
            await c.close()

    first = asyncio.run(ask(client(), 1))
    again = client()
    second = asyncio.run(ask(again, 1))
    assert second.text == first.text == "fresh answer"
    assert len(transport.requests) == 1 and again.usage()["s"].cache_hits == 1
    asyncio.run(ask(client(), 2))  # another seed is another request
    assert len(transport.requests) == 2


def test_the_cache_gives_a_row_run_again_its_own_answers_in_order_and_no_other_rows(tmp_path):
    """Without a seed in the request, a server samples anew each time: the cache must not change that."""
    served = iter(f"answer {n}" for n in range(100))
    transport = ScriptedTransport(lambda p: next(served))
    client = LLMClient(["http://x/v1"], model="m", transport=transport, cache=ResponseCache(str(tmp_path / "c.db")))
    step = client.for_step("s")
    hi = [{"role": "user", "content": "hi"}]

    async def twice(llm):
        return [(await llm.chat(hi)).text, (await llm.chat(hi)).text]

    async def go():
        try:
            first = await twice(step.for_row(7))  # one row asks the same thing twice
            again = await twice(step.for_row(7))  # the same row, re-admitted
            other = await twice(step.for_row(8))  # another row asking the same
            return first, again, other
        finally:
            await client.close()

    first, again, other = asyncio.run(go())
    assert first == again == ["answer 0", "answer 1"]
    assert other == ["answer 2", "answer 3"]
    assert len(transport.requests) == 4


def _open_and_write(path, start, n):
    start.wait()
    cache = ResponseCache(path)
    cache.put(ResponseCache.key("/chat/completions", b"%d" % n), b"answer")
    cache.close()


def test_replicas_opening_a_new_cache_file_at_the_same_moment_all_get_it(tmp_path):
    """The replicas of a run start together, each opening the run's fresh cache: none may fail on a lock."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    path = str(tmp_path / "llm-cache" / "{host}.sqlite")
    processes = [context.Process(target=_open_and_write, args=(path, start, n)) for n in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * 4
