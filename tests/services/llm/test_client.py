"""The LLM client: retries, failover, errors that fail only their row, usage per step."""

import asyncio

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from streamflow.errors import ConfigError
from streamflow.services.llm import (
    LLMBadRequest,
    LLMClient,
    LLMConnectionError,
    LLMContextLength,
    LLMRateLimited,
    LLMServerError,
    LLMTimeout,
    Response,
)
from streamflow.testing import ScriptedTransport, fake_llm

CHAT = [{"role": "user", "content": "hi"}]


def error(status, message, headers=None):
    return Response(status, msgspec.json.encode({"error": {"message": message}}), headers or {})


def answers(*replies):
    """A script answering each request with the next reply (an exception is raised)."""
    queue = list(replies)

    def answer(payload):
        reply = queue.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    return answer


def chat(client, **params):
    async def go():
        try:
            return await client.chat(CHAT, step="s", **params)
        finally:
            await client.close()

    return asyncio.run(go())


def test_reply_text_and_token_usage_are_returned_and_booked_per_step():
    client = fake_llm(lambda payload: "Hello there")
    reply = chat(client)
    assert reply.text == "Hello there" and reply.finish_reason == "stop"
    usage = client.usage()["s"]
    assert usage.requests == 1 and usage.completion_tokens == reply.completion_tokens > 0


def test_server_errors_are_retried_until_success():
    client = fake_llm(answers(error(500, "boom"), error(503, "busy"), "ok"))
    assert chat(client).text == "ok"
    assert client.usage()["s"].retries == 2


def test_connection_errors_and_timeouts_are_retried():
    client = fake_llm(answers(LLMConnectionError("refused"), LLMTimeout("slow"), "ok"))
    assert chat(client).text == "ok"


def test_rate_limit_waits_at_least_retry_after(monkeypatch):
    slept = []

    async def fake_sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    client = fake_llm(answers(error(429, "slow down", {"retry-after": "2.5"}), "ok"))
    assert chat(client).text == "ok"
    assert slept and slept[0] >= 2.5


def test_retries_give_up_with_the_kind_of_the_last_failure():
    client = fake_llm(lambda payload: error(500, "always"), max_retries=2)
    with pytest.raises(LLMServerError, match="gave up after 3 attempts"):
        chat(client)
    assert client.usage()["s"].failures == 1


def test_rate_limit_that_never_ends_is_a_rate_limited_error():
    client = fake_llm(lambda payload: error(429, "no"), max_retries=1)
    with pytest.raises(LLMRateLimited) as info:
        chat(client)
    assert info.value.kind == "llm_rate_limited"


def test_bad_request_fails_at_once_without_retry():
    transport = ScriptedTransport(lambda payload: error(400, "messages is required"))
    client = LLMClient(["http://x/v1"], model="m", transport=transport, backoff_s=0)
    with pytest.raises(LLMBadRequest, match="messages is required") as info:
        chat(client)
    assert info.value.kind == "llm_bad_request" and len(transport.requests) == 1


def test_context_overflow_is_its_own_kind():
    client = fake_llm(lambda payload: error(400, "This model's maximum context length is 8192 tokens"))
    with pytest.raises(LLMContextLength) as info:
        chat(client)
    assert info.value.kind == "llm_context_length"


def test_retry_fails_over_to_another_replica():
    seen = []

    class ByReplica(ScriptedTransport):
        async def post(self, url, body, headers, timeout_s):
            seen.append(url)
            if url.startswith("http://dead"):
                raise LLMConnectionError("refused")
            return await super().post(url, body, headers, timeout_s)

    client = LLMClient(
        ["http://dead/v1", "http://alive/v1"], model="m", transport=ByReplica(lambda p: "ok"), backoff_s=0
    )
    for _ in range(5):
        assert chat(client).text == "ok"
    for index, url in enumerate(seen):
        if url.startswith("http://dead"):
            assert seen[index + 1].startswith("http://alive")


def test_least_inflight_replica_is_preferred():
    urls = []

    class Held(ScriptedTransport):
        async def post(self, url, body, headers, timeout_s):
            urls.append(url)
            await asyncio.sleep(0.05)  # stays in flight while the next requests pick a replica
            return await super().post(url, body, headers, timeout_s)

    client = LLMClient(["http://a/v1", "http://b/v1"], model="m", transport=Held(lambda p: "ok"))

    async def go():
        return await asyncio.gather(*(client.chat(CHAT) for _ in range(4)))

    asyncio.run(go())
    assert sorted(urls) == ["http://a/v1/chat/completions"] * 2 + ["http://b/v1/chat/completions"] * 2


def test_request_carries_model_and_sampling_params_but_not_none():
    transport = ScriptedTransport(lambda payload: "ok")
    client = LLMClient(["http://x/v1"], model="default-model", transport=transport)
    chat(client, max_tokens=8, temperature=None, seed=3)
    [payload] = transport.requests
    assert payload["model"] == "default-model" and payload["max_tokens"] == 8 and payload["seed"] == 3
    assert "temperature" not in payload


def test_body_that_is_not_a_completion_is_a_bad_response():
    client = fake_llm(lambda payload: Response(200, b'{"unexpected": true}'))
    with pytest.raises(Exception) as info:
        chat(client)
    assert info.value.kind == "llm_bad_response"


def test_check_names_the_unreachable_endpoint():
    client = LLMClient(["http://127.0.0.1:9/v1"], model="m", timeout_s=2)

    async def go():
        try:
            await client.check(timeout_s=2)
        finally:
            await client.close()

    with pytest.raises(ConfigError, match=r"LLM endpoint http://127.0.0.1:9/v1 is unreachable"):
        asyncio.run(go())


def test_check_names_the_models_a_server_serves():
    class Models(ScriptedTransport):
        async def get(self, url, headers, timeout_s):
            return Response(200, b'{"data": [{"id": "llama"}, {"id": "qwen"}]}')

    client = LLMClient(["http://x/v1"], model="gpt", transport=Models(lambda p: "ok"))
    with pytest.raises(ConfigError, match="does not serve model 'gpt'; it serves: llama, qwen"):
        asyncio.run(client.check())


def check_against(answer, model="llama"):
    """Run the pre-run check against a real HTTP server whose ``GET /v1/models`` returns ``answer()``."""

    async def models(request):
        return answer()

    async def go():
        app = web.Application()
        app.router.add_get("/v1/models", models)
        server = TestServer(app)
        await server.start_server()
        client = LLMClient([str(server.make_url("/v1"))], model=model)
        try:
            await client.check(timeout_s=5)
        finally:
            await client.close()
            await server.close()

    asyncio.run(go())


def test_the_pre_run_check_refuses_a_server_that_answers_500():
    with pytest.raises(ConfigError, match=r"answered GET /models with HTTP 500, not its list of models; point") as info:
        check_against(lambda: web.Response(status=500, text="Internal Server Error"))
    assert "\n" not in str(info.value)


def test_the_pre_run_check_refuses_an_html_page_instead_of_a_model_list():
    page = "<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
    with pytest.raises(ConfigError, match=r"answered GET /models with text/html that is not a JSON model list") as info:
        check_against(lambda: web.Response(text=page, content_type="text/html"))
    assert "\n" not in str(info.value)


def test_the_pre_run_check_names_the_served_models_when_the_model_is_not_among_them():
    models = {"object": "list", "data": [{"id": "qwen-7b", "object": "model"}, {"id": "mistral", "object": "model"}]}
    with pytest.raises(ConfigError, match=r"does not serve model 'llama'; it serves: qwen-7b, mistral\.$"):
        check_against(lambda: web.json_response(models))


def test_the_pre_run_check_passes_when_the_model_list_holds_the_model():
    check_against(lambda: web.json_response({"object": "list", "data": [{"id": "llama", "object": "model"}]}))
