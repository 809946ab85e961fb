"""Fault injection for reliability tests and ``bench.chaos``: kill a run's actors while it runs.

Actors of a row-mode run are named ``streamflow-<run id>-<steps>-<replica>`` (``<steps>``: the
fused steps the actor hosts, joined by ``+``) and ``streamflow-<run id>-sink-<shard>``, so a
killer only needs the run id::

    with ActorKiller(run_id="nightly", every_s=10, only=("question",)) as killer:
        streamflow.run("pipelines/natural_reasoning.py", ["run_id=nightly"])
    print(killer.kills)
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

__all__ = ["ActorKiller"]


class ActorKiller(threading.Thread):
    """Every ``every_s`` seconds, kill one random actor of run ``run_id`` and let Ray restart it.

    ``only`` limits the victims to the actors hosting some steps (``"sink"`` names the sinks); ``limit`` stops
    after that many kills; ``when`` is checked before each kill (for example "rows are being
    written"), so kills land mid-run rather than during start-up; ``first_s`` is the wait before
    the first kill (default ``every_s``). Deterministic for a given ``seed`` and set of live actors.
    """

    def __init__(
        self,
        run_id: str,
        every_s: float,
        *,
        only: Sequence[str] = (),
        limit: int | None = None,
        when: Callable[[], bool] | None = None,
        seed: int = 0,
        first_s: float | None = None,
    ) -> None:
        super().__init__(name=f"actor-killer-{run_id}", daemon=True)
        self.prefix = f"streamflow-{run_id}-"
        self.every_s = every_s
        self.first_s = every_s if first_s is None else first_s
        self.only = tuple(only)
        self.limit = limit
        self.when = when
        self.kills: list[str] = []
        self._rng = random.Random(seed)
        self._stopped = threading.Event()

    def __enter__(self) -> ActorKiller:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stopped.set()
        self.join()

    def run(self) -> None:
        import ray

        wait_s = self.first_s
        while not self._stopped.wait(wait_s):
            wait_s = self.every_s
            if self.when is not None and not self.when():
                continue
            victims = sorted(name for name in ray.util.list_named_actors() if self._eligible(name))
            if not victims:
                continue
            name = self._rng.choice(victims)
            try:
                ray.kill(ray.get_actor(name), no_restart=False)
            except ValueError:  # the run ended in between
                continue
            self.kills.append(name)
            if self.limit is not None and len(self.kills) >= self.limit:
                return

    def _eligible(self, name: str) -> bool:
        if not name.startswith(self.prefix):
            return False
        steps = name[len(self.prefix) :].rsplit("-", 1)[0].split("+")
        return not self.only or any(step in self.only for step in steps)
