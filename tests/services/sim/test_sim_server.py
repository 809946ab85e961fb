"""The simulated server speaks the OpenAI/vLLM HTTP API: official clients work, errors look like vLLM's."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import aiohttp
import msgspec
import openai
import pytest

from streamflow.services.sim import PROFILES, LatencyProfile, SimConfig, SimServer

TEMPLATE = (
    'Write an exam question about gravity. Reply with JSON: {"clarity": <integer 0-5>, '
    '"question": "<an exam question>", "category": "<one of: Mathematics, Physics, Computer Science>", '
    '"answer": "<worked solution ending with \\boxed{final answer}>"}'
)
FAST = SimConfig(
    time_scale=0.001,
    models=["sim-8b", "sim-judge"],
    fence_rate=0.0,
    malformed_json_rate=0.0,
    zero_int_rate=0.0,
    missing_boxed_rate=0.0,
    empty_field_rate=0.0,
    refusal_rate=0.0,
)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    base_url, stop = SimServer.run_in_thread(FAST)
    yield base_url
    stop()


@pytest.fixture
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as openai_client:
        yield openai_client


def _http(method: str, url: str, body: object | bytes | None = None) -> tuple[int, str, bytes]:
    """Plain HTTP request; returns (status, content type, body) for errors too."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def _events(body: bytes) -> list[str]:
    return [line.removeprefix("data: ") for line in body.decode().splitlines() if line.startswith("data: ")]


def _chat(
    client: openai.OpenAI, content: str, *, max_tokens: int | None = None, seed: int | None = None
) -> openai.types.chat.ChatCompletion:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": content}]
    return client.chat.completions.create(model="sim-8b", messages=messages, max_tokens=max_tokens, seed=seed)


def test_official_openai_client_gets_a_chat_completion(client: openai.OpenAI) -> None:
    reply = _chat(client, "Explain how tides work.", max_tokens=200)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion" and reply.model == "sim-8b"
    (choice,) = reply.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in {"stop", "length"} and choice.logprobs is None
    usage = reply.usage
    assert usage is not None and usage.completion_tokens <= 200
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_official_openai_client_gets_a_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="sim-8b", prompt="Once upon a time")
    assert reply.id.startswith("cmpl-") and reply.object == "text_completion"
    assert reply.choices[0].text and reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 16  # the API's default max_tokens


def test_same_prompt_and_seed_give_the_same_reply(client: openai.OpenAI) -> None:
    first = _chat(client, "Explain how tides work.", seed=5, max_tokens=300)
    again = _chat(client, "Explain how tides work.", seed=5, max_tokens=300)
    other = _chat(client, "Explain how tides work.", seed=6, max_tokens=300)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


def test_yes_no_prompt_gets_a_single_token_yes_or_no(client: openai.OpenAI) -> None:
    reply = _chat(client, "Document: water boils at 100 C.\nIs it about physics? Answer Yes or No.", max_tokens=5)
    assert reply.choices[0].message.content in {"Yes", "No"}
    assert reply.usage is not None and reply.usage.completion_tokens == 1


def test_json_template_reply_has_the_template_keys_and_types(client: openai.OpenAI) -> None:
    content = _chat(client, TEMPLATE, seed=1).choices[0].message.content
    body = json.loads(content or "")
    assert list(body) == ["clarity", "question", "category", "answer"]
    assert isinstance(body["clarity"], int) and 0 <= body["clarity"] <= 5
    assert body["category"] in {"Mathematics", "Physics", "Computer Science"}
    assert "\\boxed{" in body["answer"]


def test_max_tokens_cuts_the_reply_with_finish_reason_length(client: openai.OpenAI) -> None:
    reply = _chat(client, TEMPLATE, seed=1, max_tokens=10)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 10


def test_every_served_model_name_is_listed_and_answers(client: openai.OpenAI) -> None:
    listed = client.models.list()
    assert [model.id for model in listed.data] == ["sim-8b", "sim-judge"]
    reply = client.chat.completions.create(model="sim-judge", messages=[{"role": "user", "content": "Hi"}])
    assert reply.model == "sim-judge"


def test_prompt_over_context_length_gets_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192 tokens") as error:
        _chat(client, "word " * 5000, max_tokens=4000)
    assert error.value.status_code == 400
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        _chat(client, "word " * 9000)


def test_unknown_model_gets_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="The model `gpt-9` does not exist"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "Hi"}])


def test_invalid_body_gets_400_in_the_openai_error_shape(url: str) -> None:
    missing = _http("POST", f"{url}/chat/completions", {"model": "sim-8b"})
    empty = _http("POST", f"{url}/chat/completions", {"model": "sim-8b", "messages": []})
    garbage = _http("POST", f"{url}/chat/completions", b"{not json")
    for status, content_type, body in (missing, empty, garbage):
        assert (status, content_type) == (400, "application/json")
        error = json.loads(body)["error"]
        assert error["type"] == "BadRequestError" and error["code"] == 400 and error["message"]
    assert "messages" in json.loads(missing[2])["error"]["message"]


def test_streaming_reply_ends_with_done(url: str, client: openai.OpenAI) -> None:
    request = {"model": "sim-8b", "messages": [{"role": "user", "content": "Explain tides."}], "seed": 2}
    status, content_type, body = _http("POST", f"{url}/chat/completions", {**request, "stream": True})
    assert (status, content_type) == (200, "text/event-stream")
    events = _events(body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    streamed = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert streamed == _chat(client, "Explain tides.", seed=2).choices[0].message.content


def test_streaming_reports_usage_in_the_last_chunk_when_asked(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="sim-8b",
        messages=[{"role": "user", "content": "Explain tides."}],
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 50
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_streamed_text_completion_ends_with_done(url: str) -> None:
    body = {"model": "sim-8b", "prompt": "Once upon a time", "stream": True}
    events = _events(_http("POST", f"{url}/completions", body)[2])
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


def test_health_and_stats_endpoints(url: str, client: openai.OpenAI) -> None:
    root = url.removesuffix("/v1")
    assert _http("GET", f"{root}/health")[0] == 200
    before = json.loads(_http("GET", f"{root}/stats")[2])
    _chat(client, "Hi", max_tokens=5)
    after = json.loads(_http("GET", f"{root}/stats")[2])
    assert after["completed"] == before["completed"] + 1
    assert after["max_num_seqs"] == PROFILES["llama-8b-h100"].max_num_seqs
    assert 0.0 <= after["utilization"] <= 1.0


def test_server_starts_on_a_free_port_and_batches_concurrent_clients() -> None:
    profile = LatencyProfile(a_ms=6.5, c_ms=0.11, t0_ms=12, prefill_tok_s=25_000, max_num_seqs=8, max_model_len=4096)

    async def main() -> dict[str, float]:
        server = SimServer(SimConfig(profile=profile, time_scale=0.1))
        url = await server.start()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1") and server.url == url
        async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            replies = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="sim-8b", messages=[{"role": "user", "content": f"Topic {i}"}], max_tokens=40
                    )
                    for i in range(32)
                )
            )
        stats = server.engine.stats()
        await server.stop()
        with pytest.raises(RuntimeError, match="not running"):
            _ = server.url
        assert all(reply.choices[0].message.content for reply in replies)
        return {"completed": stats.completed, "utilization": stats.utilization}

    stats = asyncio.run(main())
    assert stats["completed"] == 32
    assert stats["utilization"] > 0.5


def test_a_burst_of_connections_is_queued_until_the_server_accepts_them() -> None:
    """Thousands of rows in flight open their connections at once: none may be dropped, as with vLLM."""
    burst = 1_000

    async def main() -> int:
        server = SimServer(FAST)
        url = await server.start()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        sockets = [socket.socket() for _ in range(burst)]
        try:
            for sock in sockets:  # the loop is not running: only the kernel's queue takes them
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
            poller = select.poll()
            for sock in sockets:
                poller.register(sock, select.POLLOUT)
            connected: set[int] = set()
            deadline = time.monotonic() + 2.0
            while len(connected) < burst and time.monotonic() < deadline:
                connected.update(fd for fd, _ in poller.poll(100))
            return sum(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                for sock in sockets
                if sock.fileno() in connected
            )
        finally:
            for sock in sockets:
                sock.close()
            await server.stop()

    assert asyncio.run(main()) == burst


def test_client_that_disconnects_mid_stream_frees_its_slot() -> None:
    async def main() -> int:
        server = SimServer(SimConfig(time_scale=1.0, stream_interval_s=0.01))
        url = await server.start()
        body = {"model": "sim-8b", "messages": [{"role": "user", "content": "Write a long essay."}], "stream": True}
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"{url}/chat/completions", json=body)
            await response.content.readline()  # first event: the request is decoding
            response.close()
        for _ in range(100):
            if server.engine.stats().aborted:
                break
            await asyncio.sleep(0.01)
        stats = server.engine.stats()
        await server.stop()
        return stats.aborted + 10 * stats.running

    assert asyncio.run(main()) == 1


def test_client_that_goes_away_before_a_plain_answer_frees_its_slot() -> None:
    """A caller that crashed (its actor was killed) must not keep the simulated GPU busy, as with vLLM."""

    async def main() -> int:
        server = SimServer(SimConfig(time_scale=1.0))
        url = await server.start()
        body = {"model": "sim-8b", "messages": [{"role": "user", "content": "Write a long essay."}]}
        async with aiohttp.ClientSession() as session:
            asking = asyncio.ensure_future(session.post(f"{url}/chat/completions", json=body))
            while not server.engine.stats().running:
                await asyncio.sleep(0.01)
            asking.cancel()  # the connection closes with the answer still being made
        for _ in range(100):
            if server.engine.stats().aborted:
                break
            await asyncio.sleep(0.01)
        stats = server.engine.stats()
        await server.stop()
        return stats.aborted + 10 * stats.running

    assert asyncio.run(main()) == 1


def test_with_prefix_caching_the_next_turn_of_a_dialogue_prefills_only_what_it_adds() -> None:
    base_url, stop = SimServer.run_in_thread(msgspec.structs.replace(FAST, prefix_caching=True))
    root = base_url.removesuffix("/v1")
    try:
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
            history: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": TEMPLATE * 4}]
            first = client.chat.completions.create(model="sim-8b", messages=history, max_tokens=200)
            assert json.loads(_http("GET", f"{root}/stats")[2])["cached_prompt_tokens"] == 0
            history.append({"role": "assistant", "content": first.choices[0].message.content})
            history.append({"role": "user", "content": "Now a harder one."})
            client.chat.completions.create(model="sim-8b", messages=history, max_tokens=20)
        cached = json.loads(_http("GET", f"{root}/stats")[2])["cached_prompt_tokens"]
    finally:
        stop()
    assert first.usage is not None
    turn_one = first.usage.prompt_tokens + first.usage.completion_tokens
    assert turn_one - 32 <= cached <= turn_one + 8  # whole 16-token blocks of the first turn and its reply


def test_package_does_not_import_ray_and_has_a_cli() -> None:
    probe = "import sys, streamflow.services.sim.__main__; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], check=True)
    help_text = subprocess.run(
        [sys.executable, "-m", "streamflow.services.sim", "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "--time-scale" in help_text and "llama-8b-h100" in help_text and "--prefix-caching" in help_text
