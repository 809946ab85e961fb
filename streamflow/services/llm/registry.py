"""The endpoint registry: which replica URLs serve which model, as a small Ray actor.

Replicas are registered when streamflow starts them (or read from the config) and
removed when they die. Clients never call it per request: they keep a local copy and
refresh it every few seconds and whenever a replica's circuit opens, so new replicas
are picked up and dead ones dropped without a central hop on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

__all__ = ["EndpointRegistry", "Snapshot"]


class Snapshot(msgspec.Struct, frozen=True):
    """The registry's content at one version."""

    version: int
    endpoints: dict[str, list[str]]


class EndpointRegistry:
    """Model name -> replica URLs. Run it as an actor: ``ray.remote(EndpointRegistry)``."""

    def __init__(self, endpoints: Mapping[str, Sequence[str]] | None = None) -> None:
        self._endpoints: dict[str, list[str]] = {model: list(urls) for model, urls in (endpoints or {}).items()}
        self._version = 0

    def register(self, model: str, url: str) -> int:
        urls = self._endpoints.setdefault(model, [])
        if url not in urls:
            urls.append(url)
            self._version += 1
        return self._version

    def deregister(self, url: str) -> int:
        for urls in self._endpoints.values():
            if url in urls:
                urls.remove(url)
                self._version += 1
        return self._version

    def snapshot(self) -> Snapshot:
        return Snapshot(self._version, {model: list(urls) for model, urls in self._endpoints.items()})
