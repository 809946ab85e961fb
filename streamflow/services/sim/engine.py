"""Event-driven asyncio model of vLLM continuous batching: FCFS admission, serial prefill, shared decode steps.

A request waits for a free sequence slot (``max_num_seqs``), pays the fixed overhead t0, runs its
prefill on a single shared prefill lane at R tokens/s, then decodes together with every other running
sequence at one token per ITL(b). Unloaded, that is exactly the reference model
latency = TTFT(P, b) + (N - 1) * ITL(b) with TTFT = t0 + P/R + ITL(b).
With prefix caching on, P counts only the prompt tokens after the longest cached prefix
(``prefix_cache``): a request's prompt blocks are cached once its prefill ends, the blocks of its
reply once it finishes, and both stay until evicted, even when the request was aborted.

Decoding is not ticked per token. A virtual token clock V advances at dV/dt = 1/ITL(b(t)); a sequence
that starts decoding at V0 emits its first token at V0 + 1 and finishes at V0 + N. Finish marks sit in
a heap and one timer waits for the earliest pending event, so each request costs O(log n) however many
tokens it generates. Event times are computed from the model, not read from the wall clock, so the
reported ``Timing`` is exact even when the event loop runs late.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Sequence

import msgspec

from streamflow.services.sim.prefix_cache import PrefixCache
from streamflow.services.sim.profile import LatencyProfile

__all__ = ["BatchingEngine", "EngineStats", "SimRequest", "Timing"]

_FIRST, _FINISH = 0, 1


class Timing(msgspec.Struct, frozen=True):
    """Simulated seconds from a request's arrival to its admission, first token and last token."""

    queue_s: float
    ttft_s: float
    latency_s: float


class EngineStats(msgspec.Struct, frozen=True):
    """Counters plus the busy-slot integral, so utilization = busy_slot_s / (max_num_seqs * sim_time_s).

    Times are simulated seconds; ``sim_time_s`` runs from the engine's first request.
    """

    requests_total: int
    running: int
    waiting: int
    completed: int
    aborted: int
    prompt_tokens: int
    completion_tokens: int
    busy_slot_s: float
    sim_time_s: float
    max_num_seqs: int
    utilization: float
    first_request_at: float = 0.0
    """Wall-clock time (epoch seconds) of the first request; 0 before it (benchmarks time start-up with it)."""
    last_completion_at: float = 0.0
    """Wall-clock time the latest request finished (its last token); 0 before any did."""
    cached_prompt_tokens: int = 0
    """Prompt tokens whose prefill the prefix cache saved (0 without prefix caching)."""


class _Phase(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    DONE = "done"
    ABORTED = "aborted"


_FINAL = frozenset({_Phase.DONE, _Phase.ABORTED})


class SimRequest:
    """Handle on one request inside a ``BatchingEngine``: await its first token or completion, or abort it."""

    __slots__ = (
        "_blocks",
        "_done",
        "_engine",
        "_first",
        "_phase",
        "_t_admit",
        "_t_arrive",
        "_t_done",
        "_t_first",
        "_tail",
        "_v0",
        "cached_tokens",
        "output_tokens",
        "prompt_tokens",
        "seq_id",
    )

    def __init__(
        self,
        engine: BatchingEngine,
        seq_id: int,
        prompt_tokens: int,
        output_tokens: int,
        arrived: float,
        blocks: Sequence[int] = (),
        tail: Sequence[int] = (),
    ) -> None:
        loop = asyncio.get_running_loop()
        self._engine = engine
        self.seq_id = seq_id
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.cached_tokens = 0
        """Prompt tokens the prefix cache held at admission (their prefill is skipped)."""
        self._blocks = blocks
        self._tail = tail
        self._phase = _Phase.WAITING
        self._t_arrive = arrived
        self._t_admit = self._t_first = self._t_done = math.nan
        self._v0 = 0.0
        self._first: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()

    async def first_token(self) -> None:
        """Return once the first output token exists (raises CancelledError if the request was aborted)."""
        await asyncio.shield(self._first)

    async def wait(self) -> Timing:
        """Return the request's timing once its last token exists."""
        await asyncio.shield(self._done)
        return self.timing()

    async def poll(self, timeout: float) -> bool:  # noqa: ASYNC109 (the simulated clock, not wall time)
        """Wait up to ``timeout`` loop seconds for the last token; return whether it exists."""
        await asyncio.wait((self._done,), timeout=timeout)
        return self.done()

    def done(self) -> bool:
        """Whether the last token has been generated."""
        return self._phase is _Phase.DONE

    def decoded_tokens(self) -> int:
        """Output tokens generated so far, for pacing a streamed reply."""
        return self._engine._decoded_tokens(self)

    def timing(self) -> Timing:
        """Simulated queue wait, TTFT and end-to-end latency; NaN for stages not reached yet."""
        scale = self._engine.time_scale
        return Timing(
            queue_s=(self._t_admit - self._t_arrive) / scale,
            ttft_s=(self._t_first - self._t_arrive) / scale,
            latency_s=(self._t_done - self._t_arrive) / scale,
        )

    def abort(self) -> None:
        """Free the request's slot, as vLLM does when a client goes away; waiters get CancelledError."""
        self._engine._abort(self)


class _InstantRequest(SimRequest):
    """A request of a ``time_scale=0`` engine: finished on arrival, timing from the unloaded model."""

    __slots__ = ("_timing",)

    def __init__(self, engine: BatchingEngine, seq_id: int, prompt_tokens: int, output_tokens: int) -> None:
        super().__init__(engine, seq_id, prompt_tokens, output_tokens, arrived=0.0)
        profile = engine.profile
        ttft = profile.t0_ms / 1000.0 + profile.prefill_s(prompt_tokens) + profile.itl_s(1)
        self._timing = Timing(queue_s=0.0, ttft_s=ttft, latency_s=ttft + (output_tokens - 1) * profile.itl_s(1))
        self._phase = _Phase.DONE
        self._first.set_result(None)
        self._done.set_result(None)

    def timing(self) -> Timing:
        """Timing of the same request on an idle server (nothing waits when time is not simulated)."""
        return self._timing


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class BatchingEngine:
    """Continuous-batching latency model shared by every request of one simulated server.

    ``time_scale`` multiplies all simulated durations: 1.0 is real time, 0.01 runs 100x faster,
    0 does not wait at all (requests finish on arrival and report their unloaded timing).
    Use one engine per event loop and call it only from that loop.
    """

    def __init__(self, profile: LatencyProfile, time_scale: float = 1.0, *, prefix_caching: bool = False) -> None:
        if not time_scale >= 0 or math.isinf(time_scale):
            msg = f"BatchingEngine: time_scale must be a finite number >= 0, got {time_scale}."
            raise ValueError(msg)
        self.profile = profile
        self.time_scale = time_scale
        self.prefix_cache = PrefixCache(profile.kv_cache_tokens) if prefix_caching else None
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start = 0.0
        self._t = 0.0  # loop time the state below describes
        self._v = 0.0  # virtual token clock: decode steps completed since the engine started
        self._running = 0  # occupied sequence slots (prefill + decode)
        self._decoding = 0  # b: sequences in the decode batch
        self._waiting: deque[SimRequest] = deque()
        self._n_waiting = 0
        self._joins: list[tuple[float, int, SimRequest]] = []  # (loop time decode starts, id, request)
        self._marks: list[tuple[float, int, int, SimRequest]] = []  # (V mark, id, kind, request)
        self._prefill_free = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._busy = 0.0
        self._requests_total = 0
        self._completed = 0
        self._aborted = 0
        self._prompt_tokens = 0
        self._cached_prompt_tokens = 0
        self._completion_tokens = 0
        self._first_request_at = 0.0
        self._last_completion_at = 0.0

    def submit(
        self, prompt_tokens: int, output_tokens: int, blocks: Sequence[int] = (), tail: Sequence[int] = ()
    ) -> SimRequest:
        """Enqueue a request that will generate ``output_tokens`` tokens; must be called from the event loop.

        ``blocks`` are the prompt's block hashes and ``tail`` those its reply adds
        (``prefix_cache.block_hashes``); without prefix caching they are ignored.
        """
        if prompt_tokens < 0 or output_tokens < 1:
            msg = f"BatchingEngine: need prompt_tokens >= 0, output_tokens >= 1; got {prompt_tokens}, {output_tokens}."
            raise ValueError(msg)
        seq_id = next(self._ids)
        if not self._requests_total:
            self._first_request_at = time.time()
        self._requests_total += 1
        self._prompt_tokens += prompt_tokens
        if self.time_scale == 0:
            self._completed += 1
            self._completion_tokens += output_tokens
            self._last_completion_at = time.time()
            return _InstantRequest(self, seq_id, prompt_tokens, output_tokens)
        now = self._now()
        self._advance(now)
        request = SimRequest(self, seq_id, prompt_tokens, output_tokens, arrived=now, blocks=blocks, tail=tail)
        self._waiting.append(request)
        self._n_waiting += 1
        self._admit()
        self._reschedule()
        return request

    async def run(self, prompt_tokens: int, output_tokens: int) -> Timing:
        """Wait as long as the modelled server would take to answer; cancelling aborts the request."""
        request = self.submit(prompt_tokens, output_tokens)
        try:
            return await request.wait()
        except asyncio.CancelledError:
            request.abort()
            raise

    def stats(self) -> EngineStats:
        """Snapshot of the counters; called from the engine's loop it first brings the clock up to now.

        Called after the loop has stopped, it describes the engine as of its last event.
        """
        if self._loop is not None and self._loop is _running_loop():
            self._advance(self._now())
            self._reschedule()
        scale = self.time_scale or 1.0
        sim_time = (self._t - self._start) / scale
        busy = self._busy / scale
        capacity = self.profile.max_num_seqs * sim_time
        return EngineStats(
            requests_total=self._requests_total,
            running=self._running,
            waiting=self._n_waiting,
            completed=self._completed,
            aborted=self._aborted,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            busy_slot_s=busy,
            sim_time_s=sim_time,
            max_num_seqs=self.profile.max_num_seqs,
            utilization=busy / capacity if capacity > 0 else 0.0,
            first_request_at=self._first_request_at,
            last_completion_at=self._last_completion_at,
            cached_prompt_tokens=self._cached_prompt_tokens,
        )

    # -- clock -----------------------------------------------------------------------------------

    def _now(self) -> float:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._start = self._t = loop.time()
        elif loop is not self._loop:
            msg = "BatchingEngine is bound to another event loop; create one engine per loop."
            raise RuntimeError(msg)
        return max(loop.time(), self._t)

    def _step(self) -> float:
        """Loop seconds per decode step at the current batch size."""
        return self.profile.itl_s(self._decoding) * self.time_scale

    def _next_event(self) -> tuple[float, float]:
        t_join = self._joins[0][0] if self._joins else math.inf
        t_mark = math.inf
        if self._marks and self._decoding:
            t_mark = self._t + (self._marks[0][0] - self._v) * self._step()
        return t_join, t_mark

    def _move_to(self, t: float) -> None:
        dt = t - self._t
        if dt > 0:
            self._busy += self._running * dt
            if self._decoding:
                self._v += dt / self._step()
            self._t = t

    def _advance(self, now: float) -> None:
        """Process every join and mark due by ``now`` in model-time order, then move the clock to ``now``."""
        while True:
            t_join, t_mark = self._next_event()
            if min(t_join, t_mark) > now:
                break
            if t_mark <= t_join:
                self._move_to(t_mark)
                mark, _, kind, request = heapq.heappop(self._marks)
                self._v = max(self._v, mark)
                self._on_mark(request, kind)
            else:
                self._move_to(t_join)
                _, _, request = heapq.heappop(self._joins)
                self._on_join(request)
        self._move_to(now)

    def _reschedule(self) -> None:
        t_next = min(self._next_event())
        if t_next == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = t_next
        if t_next < math.inf and self._loop is not None:
            self._timer = self._loop.call_at(t_next, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        now = max(self._loop.time(), self._timer_at)
        self._timer, self._timer_at = None, math.inf
        self._advance(now)
        self._reschedule()

    # -- transitions -------------------------------------------------------------------------------

    def _admit(self) -> None:
        """Move waiting requests into free slots (FCFS) and book their prefill on the shared lane."""
        profile, scale = self.profile, self.time_scale
        while self._running < profile.max_num_seqs and self._waiting:
            request = self._waiting.popleft()
            if request._phase is not _Phase.WAITING:
                continue
            self._n_waiting -= 1
            self._running += 1
            request._phase = _Phase.PREFILL
            request._t_admit = self._t
            if self.prefix_cache is not None:  # vLLM computes at least the last prompt token
                cached = min(self.prefix_cache.match(request._blocks), request.prompt_tokens - 1)
                request.cached_tokens = max(cached, 0)
                self._cached_prompt_tokens += request.cached_tokens
            start = max(self._t + profile.t0_ms / 1000.0 * scale, self._prefill_free)
            prefill = profile.prefill_s(request.prompt_tokens - request.cached_tokens)
            self._prefill_free = start + prefill * scale
            heapq.heappush(self._joins, (self._prefill_free, request.seq_id, request))

    def _on_join(self, request: SimRequest) -> None:
        if request._phase is not _Phase.PREFILL:
            return
        request._phase = _Phase.DECODE
        request._v0 = self._v
        if self.prefix_cache is not None:
            self.prefix_cache.insert(request._blocks)
        if request.output_tokens > 1:
            heapq.heappush(self._marks, (self._v + 1, request.seq_id, _FIRST, request))
        heapq.heappush(self._marks, (self._v + request.output_tokens, request.seq_id, _FINISH, request))
        self._decoding += 1

    def _on_mark(self, request: SimRequest, kind: int) -> None:
        if request._phase is not _Phase.DECODE:
            return
        if kind == _FIRST:
            request._t_first = self._t
            _settle(request._first)
            return
        if request.output_tokens == 1:
            request._t_first = self._t
        request._t_done = self._t
        request._phase = _Phase.DONE
        if self.prefix_cache is not None:
            self.prefix_cache.insert(request._tail)
        self._completed += 1
        self._completion_tokens += request.output_tokens
        self._last_completion_at = time.time()
        self._release(decoding=True)
        _settle(request._first)
        _settle(request._done)

    def _release(self, *, decoding: bool) -> None:
        self._running -= 1
        if decoding:
            self._decoding -= 1
            if not self._decoding:
                self._marks.clear()  # only marks of aborted requests can be left
        self._admit()

    def _abort(self, request: SimRequest) -> None:
        if request._phase in _FINAL:
            return
        self._advance(self._now())  # the request may finish on the way
        phase = request._phase
        if phase in _FINAL:
            self._reschedule()
            return
        request._phase = _Phase.ABORTED
        self._aborted += 1
        if phase is _Phase.WAITING:
            self._n_waiting -= 1
        else:
            self._release(decoding=phase is _Phase.DECODE)
        request._first.cancel()
        request._done.cancel()
        self._reschedule()

    def _decoded_tokens(self, request: SimRequest) -> int:
        if request._phase is _Phase.DONE:
            return request.output_tokens
        if request._phase is not _Phase.DECODE or self._loop is None:
            return 0
        v_now = self._v + max(0.0, self._loop.time() - self._t) / self._step()
        return min(request.output_tokens, int(v_now - request._v0 + 1e-9))
