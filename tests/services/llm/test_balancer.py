"""Replica choice: least in-flight, circuit breaker, probing, endpoint updates."""

import asyncio

from streamflow.services.llm import LLMClient, LLMConnectionError
from streamflow.services.llm.balancer import Breaker, ReplicaSet
from streamflow.testing import ScriptedTransport


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_replica_that_keeps_failing_is_skipped_until_its_cooldown_ends():
    clock = Clock()
    replicas = ReplicaSet(["http://a/v1", "http://b/v1"], clock=clock)
    a, b = replicas.replicas
    breaker = Breaker(threshold=3, cooldown_s=2.0)
    for _ in range(3):
        a.failed(breaker, clock.now)
    assert all(replicas.pick(set()) is b for _ in range(20))
    clock.now += 2.5
    a.inflight, b.inflight = 0, 5
    probe = replicas.pick(set())
    assert probe is a and a.probing  # one probe once the cooldown is over
    assert replicas.pick(set()) is b  # no second request while the probe is out


def test_failed_probe_doubles_the_cooldown_and_success_closes_the_circuit():
    clock = Clock()
    replicas = ReplicaSet(["http://a/v1"], clock=clock)
    [a] = replicas.replicas
    breaker = Breaker(threshold=1, cooldown_s=1.0)
    a.failed(breaker, clock.now)
    assert a.open_until == clock.now + 1.0
    clock.now += 1.5
    a.failed(breaker, clock.now)
    assert a.open_until == clock.now + 2.0
    a.succeeded()
    assert a.available(clock.now) and not a.is_open


def test_when_every_replica_is_open_the_request_is_still_tried():
    replicas = ReplicaSet(["http://a/v1"])
    [a] = replicas.replicas
    a.failed(Breaker(threshold=1, cooldown_s=60), 0.0)
    assert replicas.pick(set()) is a


def test_update_keeps_state_of_known_replicas_and_adds_new_ones():
    replicas = ReplicaSet(["http://a/v1", "http://b/v1"])
    replicas.replicas[0].failures = 2
    assert replicas.update(["http://a/v1", "http://c/v1"])
    assert replicas.urls == ["http://a/v1", "http://c/v1"] and replicas.replicas[0].failures == 2
    assert not replicas.update(["http://a/v1", "http://c/v1"])


def test_client_stops_sending_to_a_dead_replica_after_the_breaker_opens():
    seen = []

    class OneDead(ScriptedTransport):
        async def post(self, url, body, headers, timeout_s):
            seen.append(url)
            if "dead" in url:
                raise LLMConnectionError("refused")
            return await super().post(url, body, headers, timeout_s)

    client = LLMClient(
        ["http://dead/v1", "http://alive/v1"],
        model="m",
        transport=OneDead(lambda p: "ok"),
        backoff_s=0,
        breaker=Breaker(threshold=2, cooldown_s=60),
    )

    async def go():
        for _ in range(30):
            await client.chat([{"role": "user", "content": "hi"}])

    asyncio.run(go())
    assert sum("dead" in url for url in seen) == 2
    usage = client.replica_usage()
    assert usage["http://dead/v1"].failures == 2 and usage["http://alive/v1"].requests == 30


def test_client_sends_to_the_replicas_it_is_told_about():
    seen = []

    class Seen(ScriptedTransport):
        async def post(self, url, body, headers, timeout_s):
            seen.append(url)
            return await super().post(url, body, headers, timeout_s)

    client = LLMClient(["http://a/v1", "http://b/v1"], model="m", transport=Seen(lambda p: "ok"))
    client.update_endpoints({"m": ["http://b/v1", "http://c/v1"], "judge": ["http://j/v1"]})
    assert client.endpoints() == {"m": ["http://b/v1", "http://c/v1"], "judge": ["http://j/v1"]}

    async def go():
        for _ in range(10):
            await client.chat([{"role": "user", "content": "hi"}])

    asyncio.run(go())
    assert {url.split("/v1")[0] for url in seen} == {"http://b", "http://c"}
