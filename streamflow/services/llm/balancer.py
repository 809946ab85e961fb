"""Load balancing over the replicas of a model as one client sees them: load, health and a circuit breaker each.

A replica that fails ``threshold`` times in a row is taken out of rotation for a
cooldown that doubles while it keeps failing (capped); after the cooldown one request
probes it, and a success puts it back. Sending to a dead replica therefore costs a few
retries, not one per row, and a replica that recovers is used again without a restart.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

__all__ = ["Breaker", "Replica", "ReplicaSet"]


class Breaker:
    """Circuit-breaker settings shared by the replicas of one client."""

    __slots__ = ("cooldown_s", "max_cooldown_s", "threshold")

    def __init__(self, threshold: int = 5, cooldown_s: float = 2.0, max_cooldown_s: float = 60.0) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s


class Replica:
    """One server URL with its in-flight count and breaker state."""

    __slots__ = ("cooldown_s", "failures", "inflight", "open_until", "probing", "url")

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.inflight = 0
        self.failures = 0
        self.open_until = 0.0
        self.cooldown_s = 0.0
        self.probing = False

    def available(self, now: float) -> bool:
        """Closed, or open but due for its single probe request."""
        return not self.probing and now >= self.open_until

    @property
    def is_open(self) -> bool:
        return self.open_until > 0.0

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.cooldown_s = 0.0
        self.probing = False

    def failed(self, breaker: Breaker, now: float) -> bool:
        """Count a failure; True if this one opened (or re-opened) the circuit."""
        self.failures += 1
        self.probing = False
        if self.failures < breaker.threshold:
            return False
        self.cooldown_s = min(breaker.max_cooldown_s, self.cooldown_s * 2 or breaker.cooldown_s)
        self.open_until = now + self.cooldown_s
        return True

    def __repr__(self) -> str:
        return f"Replica({self.url}, inflight={self.inflight}, failures={self.failures})"


class ReplicaSet:
    """The replicas of one model; picks the least-loaded available one."""

    def __init__(self, urls: Iterable[str], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.replicas = [Replica(url) for url in urls]
        self._clock = clock
        self._tie = random.Random()

    def pick(self, exclude: set[Replica]) -> Replica:
        """Least in-flight among available replicas not in ``exclude``.

        If every replica is excluded or open, the least-loaded one is tried anyway: a
        request never fails only because breakers are open.
        """
        now = self._clock()
        pool = [r for r in self.replicas if r not in exclude and r.available(now)]
        if not pool:
            pool = [r for r in self.replicas if r not in exclude] or self.replicas
        least = min(r.inflight for r in pool)
        chosen = self._tie.choice([r for r in pool if r.inflight == least])
        if chosen.is_open and now >= chosen.open_until:
            chosen.probing = True
        return chosen

    def update(self, urls: Iterable[str]) -> bool:
        """Adopt a new list of URLs, keeping the state of replicas still present; True if it changed."""
        wanted = [url.rstrip("/") for url in urls]
        if not wanted or wanted == [r.url for r in self.replicas]:
            return False
        known = {r.url: r for r in self.replicas}
        self.replicas = [known.get(url) or Replica(url) for url in wanted]
        return True

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]
