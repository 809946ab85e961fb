"""The driver's watch over the LLM replicas: every step replica hears when one is gone."""

import asyncio

from streamflow.runtime.row import watch
from streamflow.runtime.row.watch import watch_llm


class Service:
    """A service whose replica ``dead`` dies before the second look."""

    def __init__(self):
        self.alive = ["http://a/v1", "http://dead/v1"]
        self.looks = 0

    async def watch(self):
        self.looks += 1
        if self.looks == 2:
            self.alive.remove("http://dead/v1")
            return ["http://dead/v1"]
        return []

    def access(self):
        class Access:
            endpoints = {"m": list(self.alive)}

        return Access()


class Handle:
    def __init__(self):
        self.told = []
        self.update_endpoints = self  # handle.update_endpoints.remote(...)

    async def remote(self, endpoints):
        self.told.append(endpoints)


def test_every_step_replica_is_told_the_endpoints_left_once_a_replica_dies(monkeypatch):
    monkeypatch.setattr(watch, "HEALTH_EVERY_S", 0.01)
    service = Service()
    actors = {"group": [Handle(), Handle()], "other": [Handle()]}

    async def go():
        task = asyncio.create_task(watch_llm(service, actors))
        while service.looks < 4:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(go())
    for handle in [*actors["group"], *actors["other"]]:
        assert handle.told == [{"m": ["http://a/v1"]}]  # once, when it died; nothing while nothing changed
