"""The batching engine reproduces the reference latency model: TTFT, per-token time ITL(b), FCFS queueing.

Most tests run on a virtual-time event loop (fixture ``run_virtual``): requests submitted together arrive
at the same instant and the computed timings can be compared exactly with the formulas.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from streamflow.services.sim import PROFILES, LatencyProfile
from streamflow.services.sim.engine import BatchingEngine, Timing

Runner = Callable[[Coroutine[Any, Any, Any]], Any]

DEFAULT = PROFILES["llama-8b-h100"]
# Prefill in zero time and no overhead, so decode behaviour is seen alone.
DECODE_ONLY = LatencyProfile(a_ms=6.5, c_ms=0.11, t0_ms=0.0, prefill_tok_s=1e15, max_num_seqs=256, max_model_len=8192)


def _with(profile: LatencyProfile, **changes: float) -> LatencyProfile:
    fields = {name: getattr(profile, name) for name in profile.__struct_fields__}
    return LatencyProfile(**{**fields, **changes})


async def _all(engine: BatchingEngine, requests: list[tuple[int, int]]) -> list[Timing]:
    submitted = [engine.submit(prompt, output) for prompt, output in requests]
    return [await request.wait() for request in submitted]


def test_default_profile_has_the_reference_constants() -> None:
    assert (DEFAULT.a_ms, DEFAULT.c_ms, DEFAULT.t0_ms, DEFAULT.prefill_tok_s) == (6.5, 0.11, 12.0, 25_000.0)
    assert (DEFAULT.max_num_seqs, DEFAULT.max_model_len) == (256, 8192)
    assert DEFAULT.itl_s(256) == pytest.approx(0.03466)


def test_a_profile_whose_kv_cache_holds_less_than_one_prefix_cache_block_is_refused() -> None:
    """Refused where the profile is made, not later when a server turns prefix caching on."""
    assert _with(DECODE_ONLY, kv_cache_tokens=16).kv_cache_tokens == 16
    with pytest.raises(ValueError, match=r"kv_cache_tokens >= 16 \(one prefix-cache block\), got .*, 15\."):
        _with(DECODE_ONLY, kv_cache_tokens=15)


def test_single_request_latency_is_ttft_plus_decode_steps_at_batch_one(run_virtual: Runner) -> None:
    (timing,) = run_virtual(_all(BatchingEngine(DEFAULT, 1.0), [(1000, 50)]))
    ttft = DEFAULT.t0_ms / 1000 + 1000 / DEFAULT.prefill_tok_s + DEFAULT.itl_s(1)
    assert timing.queue_s == 0.0
    assert timing.ttft_s == pytest.approx(ttft, rel=1e-9)
    assert timing.latency_s == pytest.approx(ttft + 49 * DEFAULT.itl_s(1), rel=1e-9)


def test_time_scale_shrinks_wall_time_but_not_simulated_time(run_virtual: Runner) -> None:
    async def wall_and_timing(scale: float) -> tuple[float, Timing]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        timing = await BatchingEngine(DEFAULT, scale).run(1000, 50)
        return loop.time() - start, timing

    wall_1, timing_1 = run_virtual(wall_and_timing(1.0))
    wall_100x, timing_100x = run_virtual(wall_and_timing(0.01))
    assert wall_1 == pytest.approx(timing_1.latency_s)
    assert wall_100x == pytest.approx(wall_1 * 0.01)
    assert timing_100x.latency_s == pytest.approx(timing_1.latency_s)


def test_single_request_takes_its_modelled_time_on_a_real_clock() -> None:
    start = time.perf_counter()
    timing = asyncio.run(BatchingEngine(DEFAULT, 0.01).run(500, 100))
    assert timing.latency_s * 0.01 <= time.perf_counter() - start < timing.latency_s * 0.01 + 0.5


def test_requests_beyond_max_num_seqs_wait_for_a_free_slot(run_virtual: Runner) -> None:
    engine = BatchingEngine(_with(DEFAULT, max_num_seqs=2), 1.0)

    async def main() -> tuple[list[Timing], int, int]:
        requests = [engine.submit(100, 40) for _ in range(3)]
        stats = engine.stats()
        return [await request.wait() for request in requests], stats.running, stats.waiting

    (first, _, third), running, waiting = run_virtual(main())
    assert (running, waiting) == (2, 1)
    assert first.queue_s == 0.0
    assert third.queue_s == pytest.approx(first.latency_s, rel=1e-9)


def test_throughput_with_b_running_is_b_over_itl_of_b(run_virtual: Runner) -> None:
    batch, tokens = 64, 200
    timings = run_virtual(_all(BatchingEngine(DECODE_ONLY, 1.0), [(10, tokens)] * batch))
    makespan = max(timing.latency_s for timing in timings)
    assert batch * tokens / makespan == pytest.approx(batch / DECODE_ONLY.itl_s(batch), rel=1e-9)


def test_decode_speeds_up_when_a_sequence_leaves_the_batch(run_virtual: Runner) -> None:
    long, short = run_virtual(_all(BatchingEngine(DECODE_ONLY, 1.0), [(10, 100), (10, 10)]))
    assert short.latency_s == pytest.approx(10 * DECODE_ONLY.itl_s(2), rel=1e-9)
    assert long.latency_s == pytest.approx(10 * DECODE_ONLY.itl_s(2) + 90 * DECODE_ONLY.itl_s(1), rel=1e-9)


def test_decode_slows_down_when_a_sequence_joins_the_batch(run_virtual: Runner) -> None:
    engine = BatchingEngine(DECODE_ONLY, 1.0)

    async def main() -> Timing:
        early = engine.submit(10, 100)
        await asyncio.sleep(50 * DECODE_ONLY.itl_s(1))
        engine.submit(10, 1000)
        return await early.wait()

    assert run_virtual(main()).latency_s == pytest.approx(50 * DECODE_ONLY.itl_s(1) + 50 * DECODE_ONLY.itl_s(2))


def test_prefills_share_one_lane_at_the_prefill_rate(run_virtual: Runner) -> None:
    profile = _with(DEFAULT, t0_ms=0.0, prefill_tok_s=10_000.0)
    first, second = run_virtual(_all(BatchingEngine(profile, 1.0), [(5000, 1), (5000, 1)]))
    assert first.ttft_s == pytest.approx(0.5 + profile.itl_s(1), rel=1e-9)
    assert second.ttft_s == pytest.approx(1.0 + profile.itl_s(1), rel=1e-9)


def test_busy_slot_integral_adds_up_the_time_slots_are_occupied(run_virtual: Runner) -> None:
    engine = BatchingEngine(_with(DEFAULT, max_num_seqs=4), 1.0)
    timings = run_virtual(_all(engine, [(200, 30), (200, 60), (200, 90), (200, 120)]))
    stats = engine.stats()
    assert stats.busy_slot_s == pytest.approx(sum(timing.latency_s for timing in timings), rel=1e-9)
    assert stats.sim_time_s == pytest.approx(max(timing.latency_s for timing in timings), rel=1e-9)
    assert stats.utilization == pytest.approx(stats.busy_slot_s / (4 * stats.sim_time_s))
    assert (stats.requests_total, stats.completed, stats.running, stats.waiting) == (4, 4, 0, 0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (800, 300)


def test_saturated_engine_keeps_every_slot_busy(run_virtual: Runner) -> None:
    engine = BatchingEngine(_with(DEFAULT, max_num_seqs=8), 1.0)
    run_virtual(_all(engine, [(10, 500)] * 64))
    assert engine.stats().utilization > 0.95


def test_time_scale_zero_answers_at_once_with_the_unloaded_timing() -> None:
    engine = BatchingEngine(DEFAULT, 0.0)
    start = time.perf_counter()
    timings = asyncio.run(_all(engine, [(1000, 2000)] * 500))
    assert time.perf_counter() - start < 1.0
    ttft = DEFAULT.t0_ms / 1000 + 1000 / DEFAULT.prefill_tok_s + DEFAULT.itl_s(1)
    assert timings[-1] == Timing(queue_s=0.0, ttft_s=ttft, latency_s=ttft + 1999 * DEFAULT.itl_s(1))
    assert engine.stats().completed == 500


def test_cancelled_request_frees_its_slot_for_the_next_in_line(run_virtual: Runner) -> None:
    engine = BatchingEngine(_with(DEFAULT, max_num_seqs=1), 1.0)

    async def main() -> Timing:
        hog = asyncio.create_task(engine.run(10, 1_000_000))
        await asyncio.sleep(1.0)
        waiter = engine.submit(10, 5)
        assert engine.stats().waiting == 1
        hog.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hog
        return await waiter.wait()

    timing = run_virtual(main())
    stats = engine.stats()
    assert timing.queue_s == 0.0
    assert (stats.aborted, stats.completed, stats.running) == (1, 1, 0)


def test_decoded_tokens_grow_while_a_request_decodes(run_virtual: Runner) -> None:
    engine = BatchingEngine(DECODE_ONLY, 1.0)

    async def main() -> list[int]:
        request = engine.submit(10, 300)
        await request.first_token()
        seen = [request.decoded_tokens()]
        await asyncio.sleep(100.5 * DECODE_ONLY.itl_s(1))
        seen.append(request.decoded_tokens())
        await request.wait()
        return [*seen, request.decoded_tokens()]

    assert run_virtual(main()) == [1, 101, 300]


def test_thousands_of_concurrent_requests_cost_cpu_per_request_not_per_token() -> None:
    engine = BatchingEngine(DEFAULT, 0.0005)
    cpu = time.process_time()
    asyncio.run(_all(engine, [(500, 5000)] * 2000))  # 10M tokens: a per-token loop could not finish in time
    assert time.process_time() - cpu < 5.0
    assert engine.stats().completed == 2000


def test_engine_rejects_a_request_without_output_tokens(run_virtual: Runner) -> None:
    async def main() -> None:
        BatchingEngine(DEFAULT, 1.0).submit(10, 0)

    with pytest.raises(ValueError, match="output_tokens >= 1"):
        run_virtual(main())


# -- prefix caching ------------------------------------------------------------------------------

PROMPT = list(range(1, 64))  # block hashes of a 63-block (1,008-token) prompt
PREFILL_ONLY = _with(DEFAULT, t0_ms=0.0)


def _second(
    run: Runner, engine: BatchingEngine, first: list[int], second: list[int], *, abort_first: bool = False
) -> Timing:
    """Timing of a 1,008-token prompt with blocks ``second`` sent after one with blocks ``first`` finished (or aborted)."""

    async def main() -> Timing:
        earlier = engine.submit(1008, 50, first)
        if abort_first:
            await earlier.first_token()
            earlier.abort()
        else:
            await earlier.wait()
        return await engine.submit(1008, 5, second).wait()

    return run(main())


def test_a_prompt_sent_again_prefills_only_its_last_token_with_prefix_caching(run_virtual: Runner) -> None:
    timing = _second(run_virtual, BatchingEngine(PREFILL_ONLY, 1.0, prefix_caching=True), PROMPT, PROMPT)
    assert timing.ttft_s == pytest.approx(1 / PREFILL_ONLY.prefill_tok_s + PREFILL_ONLY.itl_s(1))


def test_without_prefix_caching_a_prompt_sent_again_is_prefilled_whole(run_virtual: Runner) -> None:
    timing = _second(run_virtual, BatchingEngine(PREFILL_ONLY, 1.0), PROMPT, PROMPT)
    assert timing.ttft_s == pytest.approx(1008 / PREFILL_ONLY.prefill_tok_s + PREFILL_ONLY.itl_s(1))


def test_only_the_blocks_after_the_longest_cached_prefix_are_prefilled(run_virtual: Runner) -> None:
    diverging = [*PROMPT[:10], *(-b for b in PROMPT[10:])]  # same first 10 blocks (160 tokens), then different
    timing = _second(run_virtual, BatchingEngine(PREFILL_ONLY, 1.0, prefix_caching=True), PROMPT, diverging)
    assert timing.ttft_s == pytest.approx((1008 - 160) / PREFILL_ONLY.prefill_tok_s + PREFILL_ONLY.itl_s(1))


def test_the_prompt_of_an_aborted_request_stays_cached_as_in_vllm(run_virtual: Runner) -> None:
    engine = BatchingEngine(PREFILL_ONLY, 1.0, prefix_caching=True)
    timing = _second(run_virtual, engine, PROMPT, PROMPT, abort_first=True)
    assert timing.ttft_s == pytest.approx(1 / PREFILL_ONLY.prefill_tok_s + PREFILL_ONLY.itl_s(1))
    assert engine.stats().cached_prompt_tokens == 1007


def test_the_reply_of_a_finished_request_is_cached_for_the_next_turn(run_virtual: Runner) -> None:
    engine = BatchingEngine(PREFILL_ONLY, 1.0, prefix_caching=True)

    async def main() -> int:
        await engine.submit(1008, 50, PROMPT, tail=[100, 101, 102]).wait()
        await engine.submit(1100, 5, [*PROMPT, 100, 101, 102, 103]).wait()
        return engine.stats().cached_prompt_tokens

    assert run_virtual(main()) == (63 + 3) * 16


def test_the_least_recently_used_blocks_are_evicted_beyond_the_kv_cache(run_virtual: Runner) -> None:
    engine = BatchingEngine(_with(PREFILL_ONLY, kv_cache_tokens=64 * 16), 1.0, prefix_caching=True)

    async def main() -> int:
        await engine.submit(1008, 5, PROMPT).wait()
        await engine.submit(1008, 5, [-b for b in PROMPT]).wait()  # 63 more blocks push out all but one
        await engine.submit(1008, 5, PROMPT).wait()
        return engine.stats().cached_prompt_tokens

    assert run_virtual(main()) == 0
