"""A relay sends each request once, and its answer outlives the caller that asked for it."""

import asyncio

import msgspec
import pytest
import ray

from streamflow import ConfigError
from streamflow.config import compose
from streamflow.services.llm import LLMClient
from streamflow.services.llm.cache import ResponseCache
from streamflow.services.llm.failures import LLMConnectionError, LLMTimeout
from streamflow.services.llm.relay import LLMRelay, RelayTransport
from streamflow.services.llm.transport import Response
from streamflow.testing import ScriptedTransport

URL = "http://fake.invalid/v1/chat/completions"
BODY = msgspec.json.encode({"model": "fake", "messages": [{"role": "user", "content": "hi"}]})


class SlowServer(ScriptedTransport):
    """Answers after ``delay_s``, counting the requests that reached it."""

    def __init__(self, delay_s=0.2, answer=lambda payload: "hello"):
        super().__init__(answer)
        self.delay_s = delay_s

    async def post(self, url, body, headers, timeout_s):
        await asyncio.sleep(self.delay_s)
        return await super().post(url, body, headers, timeout_s)


def test_callers_asking_for_one_key_at_once_share_one_request(tmp_path):
    server = SlowServer()

    async def body():
        relay = LLMRelay(str(tmp_path / "cache.sqlite"), server)
        return await asyncio.gather(*(relay.post(b"key", URL, BODY, {}, 5.0) for _ in range(3)))

    replies = asyncio.run(body())
    assert len(server.requests) == 1
    assert {reply.status for reply in replies} == {200} and len({reply.body for reply in replies}) == 1


def test_the_answer_of_a_caller_that_went_away_is_kept_for_the_next_one(tmp_path):
    server = SlowServer()
    cache_path = str(tmp_path / "cache.sqlite")

    async def body():
        relay = LLMRelay(cache_path, server)
        caller = asyncio.ensure_future(relay.post(b"key", URL, BODY, {}, 5.0))
        await asyncio.sleep(0.05)
        caller.cancel()  # its actor died mid-call
        await asyncio.sleep(0.3)
        return await relay.post(b"key", URL, BODY, {}, 5.0)  # the row, re-admitted, asks again

    reply = asyncio.run(body())
    assert len(server.requests) == 1 and reply.status == 200
    assert ResponseCache(cache_path).get(b"key") == reply.body


def test_a_body_that_is_not_a_completion_is_passed_on_but_not_kept(tmp_path):
    server = SlowServer(delay_s=0, answer=lambda payload: Response(200, b"<html>proxy</html>"))
    cache_path = str(tmp_path / "cache.sqlite")
    reply = asyncio.run(LLMRelay(cache_path, server).post(b"key", URL, BODY, {}, 5.0))
    assert reply.body == b"<html>proxy</html>"
    assert ResponseCache(cache_path).get(b"key") is None


def test_a_failed_request_comes_back_as_a_value_and_is_sent_again_next_time(tmp_path):
    calls = []

    def answer(payload):
        calls.append(1)
        if len(calls) == 1:
            raise LLMTimeout("no answer within 5 s")
        return "hello"

    relay = LLMRelay(str(tmp_path / "cache.sqlite"), SlowServer(delay_s=0, answer=answer))

    async def body():
        return await relay.post(b"key", URL, BODY, {}, 5.0), await relay.post(b"key", URL, BODY, {}, 5.0)

    failed, answered = asyncio.run(body())
    assert isinstance(failed, LLMTimeout) and answered.status == 200 and len(calls) == 2


class FakeHandle:
    """A relay actor handle that calls the relay in-process (``handle.post.remote(...)``)."""

    def __init__(self, relay=None, error=None):
        self.relay, self.error, self.keys = relay, error, []

        class Method:
            async def remote(inner, key, *args):
                self.keys.append(key)
                if self.error is not None:
                    raise self.error
                return await self.relay.post(key, *args)

        self.post = Method()


def test_a_client_on_a_relay_sends_its_cache_keys_and_leaves_the_cache_to_the_relay(tmp_path):
    cache_path = str(tmp_path / "cache.sqlite")
    handle = FakeHandle(LLMRelay(cache_path, SlowServer(delay_s=0)))
    client = LLMClient(["http://fake.invalid/v1"], model="fake", cache=ResponseCache(cache_path),
                       transport=RelayTransport(handle))  # fmt: skip

    async def body():
        first = await client.chat([{"role": "user", "content": "hi"}])
        again = await client.chat([{"role": "user", "content": "hi"}])
        return first, again

    first, again = asyncio.run(body())
    assert first.text == again.text == "hello"
    assert len(handle.keys) == 1  # the second call was a cache hit the relay had written
    assert client.usage()[""].cache_hits == 1


def test_a_relay_that_is_restarting_is_a_connection_error_the_client_retries(tmp_path):
    transport = RelayTransport(FakeHandle(error=ray.exceptions.RayActorError()))
    with pytest.raises(LLMConnectionError, match="relay"):
        asyncio.run(transport.post(URL, BODY, {}, 5.0, key=b"key"))


def test_a_relay_needs_the_response_cache():
    with pytest.raises(ConfigError, match=r"llm\.relay"):
        compose({}, ["input.path=rows.jsonl", "llm.relay=true", "llm.cache.enabled=false"])
