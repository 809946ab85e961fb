"""A relay sends each request once, and its answer outlives the caller that asked for it."""

import asyncio
import socket

import msgspec
import pytest
import ray

from streamflow.config import CacheConfig, LLMConfig
from streamflow.services.llm import LLMClient
from streamflow.services.llm import relay as relay_module
from streamflow.services.llm.cache import ResponseCache
from streamflow.services.llm.failures import LLMConnectionError, LLMTimeout
from streamflow.services.llm.relay import (
    LLMRelay,
    RelayProcess,
    RelayServer,
    RelayTransport,
    listening_socket,
    relay_address,
    relay_addresses,
    start_relays,
)
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


def serving(relay, address):
    """``relay`` answering on ``address`` from this event loop (a task to cancel at the end)."""
    return asyncio.ensure_future(relay.serve(listening_socket(address)))


class NoServer(ScriptedTransport):
    """A direct transport for clients that must not send anything themselves."""

    def __init__(self):
        super().__init__(lambda payload: pytest.fail("the request did not go through the relay"))


def test_a_client_on_a_relay_sends_its_cache_keys_and_leaves_the_cache_to_the_relay(tmp_path):
    cache_path = str(tmp_path / "cache.sqlite")
    server = SlowServer(delay_s=0)
    address = relay_address("test", "node-a")
    cache = ResponseCache(cache_path)
    client = LLMClient(["http://fake.invalid/v1"], model="fake", cache=cache,
                       transport=RelayTransport(address, cache, direct=NoServer()))  # fmt: skip

    async def body():
        relaying = serving(LLMRelay(cache_path, server), address)
        await asyncio.sleep(0)
        first = await client.chat([{"role": "user", "content": "hi"}])
        again = await client.chat([{"role": "user", "content": "hi"}])
        relaying.cancel()
        return first, again

    first, again = asyncio.run(body())
    assert first.text == again.text == "hello"
    assert len(server.requests) == 1  # the second call was a cache hit the relay had written
    assert client.usage()[""].cache_hits == 1


def test_requests_go_straight_to_the_server_until_the_relay_listens_and_their_answers_are_kept(tmp_path):
    cache_path = str(tmp_path / "cache.sqlite")
    direct, relayed = SlowServer(delay_s=0), SlowServer(delay_s=0)
    address = relay_address("test", "node-b")
    cache = ResponseCache(cache_path)
    transport = RelayTransport(address, cache, direct=direct, retry_s=0.05)

    async def body():
        before = await transport.post(URL, BODY, {}, 5.0, key=b"before")  # nothing listens yet
        relaying = serving(LLMRelay(cache_path, relayed), address)
        await asyncio.sleep(0.1)
        after = await transport.post(URL, BODY, {}, 5.0, key=b"after")
        relaying.cancel()
        await transport.close()
        return before, after

    before, after = asyncio.run(body())
    assert before.status == after.status == 200
    assert (len(direct.requests), len(relayed.requests)) == (1, 1)
    assert cache.get(b"before") == before.body and cache.get(b"after") == after.body


def test_many_calls_share_one_connection_and_each_gets_its_own_answer(tmp_path):
    cache_path = str(tmp_path / "cache.sqlite")
    server = SlowServer(delay_s=0.01, answer=lambda payload: payload["messages"][0]["content"])
    address = relay_address("test", "node-c")
    client = LLMClient(["http://fake.invalid/v1"], model="fake", cache=ResponseCache(cache_path),
                       transport=RelayTransport(address, ResponseCache(cache_path), direct=NoServer()))  # fmt: skip

    async def body():
        relaying = serving(LLMRelay(cache_path, server), address)
        await asyncio.sleep(0)
        answers = await asyncio.gather(*(client.chat([{"role": "user", "content": f"q{i}"}]) for i in range(50)))
        relaying.cancel()
        return [answer.text for answer in answers]

    assert asyncio.run(body()) == [f"q{i}" for i in range(50)]


def ask_once(start_relay, address, timeout_s=5.0):
    """One request through the relay at ``address``; ``start_relay()`` starts it and returns how to stop it."""

    async def body():
        stop = await start_relay()
        try:
            return await RelayTransport(address, None, direct=NoServer()).post(URL, BODY, {}, timeout_s, key=b"key")
        finally:
            stop()

    return asyncio.run(body())


def relay_whose_server_answers(answer, tmp_path, address):
    async def start():
        return serving(LLMRelay(str(tmp_path / "cache.sqlite"), SlowServer(delay_s=0, answer=answer)), address).cancel

    return start


def fake_relay(handler, address):
    async def start():
        return (await asyncio.start_unix_server(handler, sock=listening_socket(address))).close

    return start


@pytest.mark.parametrize(
    ("failure", "seen_as", "message"),
    [
        (LLMTimeout("no answer within 5 s"), LLMTimeout, "no answer within 5 s"),
        (RuntimeError("a bug in the relay"), LLMConnectionError, "a bug in the relay"),  # not a wait for ever
    ],
    ids=["llm-error", "bug"],
)
def test_a_failure_in_the_relay_comes_back_to_its_caller_as_an_llm_error(tmp_path, failure, seen_as, message):
    def answer(payload):
        raise failure

    address = relay_address("test", f"node-{type(failure).__name__}")
    with pytest.raises(seen_as, match=message):
        ask_once(relay_whose_server_answers(answer, tmp_path, address), address)


def test_a_relay_that_goes_away_mid_call_is_a_connection_error_the_client_retries():
    async def hang_up(reader, writer):
        await reader.readexactly(4)
        writer.close()  # the relay's process died with the call

    address = relay_address("test", "node-e")
    with pytest.raises(LLMConnectionError, match="relay"):
        ask_once(fake_relay(hang_up, address), address)


def test_a_relay_that_never_answers_is_a_timeout_the_client_retries(monkeypatch):
    async def never_answer(reader, writer):
        await reader.read()  # reads the request and keeps the connection open, silent

    monkeypatch.setattr(relay_module, "_GRACE_S", 0.05)
    address = relay_address("test", "node-g")
    with pytest.raises(LLMTimeout, match="relay"):
        ask_once(fake_relay(never_answer, address), address, timeout_s=0.05)


def answers_through(address: str, cache_path: str) -> None:
    """A request through the relay at ``address`` to a port nothing serves fails there, and says so."""

    async def body():
        transport = RelayTransport(address, ResponseCache(cache_path), direct=NoServer())
        try:
            await transport.post("http://127.0.0.1:9/v1/chat/completions", BODY, {}, 5.0, key=b"key")
        finally:
            await transport.close()

    with pytest.raises(LLMConnectionError, match=r"127\.0\.0\.1:9"):
        asyncio.run(body())


def test_the_drivers_node_has_its_relay_in_the_driver_process(ray_runtime, tmp_path):
    cache_path = str(tmp_path / "cache.sqlite")
    addresses = relay_addresses()
    relays = start_relays(cache_path, addresses)
    node = ray.get_runtime_context().get_node_id()
    try:
        assert relays.here is not None and relays.here.address == addresses[node]
        assert relays.actors == {}  # one node: no relay process to start
        answers_through(addresses[node], cache_path)
    finally:
        relays.stop()
    with pytest.raises(OSError):  # stopped: nothing listens any more
        socket.socket(socket.AF_UNIX).connect(addresses[node])


def test_stopping_a_relay_hangs_up_on_its_callers_and_abandons_their_requests(tmp_path):
    silent = socket.create_server(("127.0.0.1", 0))  # takes the relay's connection, never answers
    silent.settimeout(10)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/chat/completions"
    address = relay_address("test", "node-stop")
    relay = RelayServer(str(tmp_path / "cache.sqlite"), address)

    async def body():
        transport = RelayTransport(address, ResponseCache(str(tmp_path / "cache.sqlite")), direct=NoServer())
        try:
            asking = asyncio.ensure_future(transport.post(url, BODY, {}, 60.0, key=b"key"))
            server_side, _ = await asyncio.to_thread(silent.accept)  # the request is running in the relay
            await asyncio.to_thread(relay.stop)  # the caller still holds its connection open
            with pytest.raises(LLMConnectionError, match="went away"):
                await asyncio.wait_for(asking, 10)  # retried by the client, as a lost connection is
            server_side.close()
        finally:
            await transport.close()

    try:
        asyncio.run(body())
    finally:
        silent.close()
    with pytest.raises(OSError):
        socket.socket(socket.AF_UNIX).connect(address)


def test_a_relay_actor_answers_for_the_steps_of_its_node(ray_runtime, tmp_path):
    cache_path = str(tmp_path / "cache.sqlite")
    address = relay_address("test", "node-actor")
    handle = ray.remote(RelayProcess).remote(cache_path, address)
    try:
        assert ray.get(handle.ready.remote()) == address
        answers_through(address, cache_path)
    finally:
        ray.kill(handle)


def test_without_the_response_cache_requests_go_straight_to_the_servers():
    assert LLMConfig(relay=True, cache=CacheConfig(path="run/llm-cache.sqlite")).uses_relay
    assert not LLMConfig(relay=True, cache=CacheConfig(path="run/llm-cache.sqlite", enabled=False)).uses_relay
    assert not LLMConfig(relay=False, cache=CacheConfig(path="run/llm-cache.sqlite")).uses_relay


def test_a_run_without_an_llm_starts_no_relay():
    assert not LLMConfig(backend="none", relay=True, cache=CacheConfig(path="run/llm-cache.sqlite")).uses_relay
