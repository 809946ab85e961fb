"""Latency constants of a vLLM-style server, as used by the simulator's batching engine.

The model is a vLLM-style server's: ITL(b) = a + c*b, TTFT = t0 + P/R + ITL(b), for a batch of
b sequences and a prompt of P tokens (``docs/simulator.md``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from streamflow.services.sim.prefix_cache import BLOCK_TOKENS

__all__ = ["DEFAULT_PROFILE", "PROFILES", "LatencyProfile", "ProfileName"]

ProfileName = Literal["llama-8b-h100", "llama-3b-h100", "llama-70b-4xh100", "llama-70b-8xh100"]
"""The names of ``PROFILES``, as a type the run config can declare (``llm.sim.profile``)."""


class LatencyProfile(msgspec.Struct, frozen=True, kw_only=True):
    """Constants of one model/GPU pair: per-token time a + c*b, fixed overhead, prefill rate, limits.

    Per-token time grows linearly with the decode batch b because each running sequence adds
    KV-cache reads to every step; the fixed part is the weight read plus CPU overhead.
    """

    a_ms: float
    c_ms: float
    t0_ms: float
    prefill_tok_s: float
    max_num_seqs: int
    max_model_len: int
    kv_cache_tokens: int = 400_000
    """Tokens the GPU's KV cache holds (the memory left after the weights): the most prefix caching keeps."""

    def __post_init__(self) -> None:
        if self.a_ms < 0 or self.c_ms < 0 or self.t0_ms < 0:
            msg = f"LatencyProfile: a_ms, c_ms and t0_ms must be >= 0, got {self.a_ms}, {self.c_ms}, {self.t0_ms}."
            raise ValueError(msg)
        too_small = self.max_num_seqs < 1 or self.max_model_len < 2 or self.kv_cache_tokens < BLOCK_TOKENS
        if self.prefill_tok_s <= 0 or too_small:
            msg = (
                "LatencyProfile: need prefill_tok_s > 0, max_num_seqs >= 1, max_model_len >= 2 and "
                f"kv_cache_tokens >= {BLOCK_TOKENS} (one prefix-cache block), got {self.prefill_tok_s}, "
                f"{self.max_num_seqs}, {self.max_model_len}, {self.kv_cache_tokens}."
            )
            raise ValueError(msg)

    def itl_s(self, batch: int) -> float:
        """Seconds per decode step when ``batch`` sequences decode together (b capped at max_num_seqs)."""
        return (self.a_ms + self.c_ms * min(max(batch, 1), self.max_num_seqs)) / 1000.0

    def prefill_s(self, prompt_tokens: int) -> float:
        """Seconds of prefill compute for a prompt, excluding the fixed overhead t0."""
        return prompt_tokens / self.prefill_tok_s


# kv_cache_tokens: arithmetic, not measured. vLLM gives the KV cache 90% of GPU memory less the
# weights and a few GB of activations; a token takes layers x KV heads x head dim x 2 (K, V) x 2 bytes:
# 128 KiB for Llama-3.1-8B (32 x 8 x 128), 112 KiB for 3B (28 layers), 320 KiB for 70B (80 layers).
# max_num_seqs: vLLM's own default on H100 is 1024 (reference doc, table 1b #12); we use 256,
# the V0 / A100-class default (#14), so a single simulated server saturates at a batch size
# where the linear ITL fit (§3) is still backed by measurements (b <= 167, #4/#5).
PROFILES: dict[ProfileName, LatencyProfile] = {
    # Measured row of §3: a from #1 (TPOT 6.48 ms at c=1), c from the fit over #1 and #4/#5,
    # t0 from #3/#17 (TTFT ~10-14 ms for short prompts), prefill rate from the §2 cross-check.
    "llama-8b-h100": LatencyProfile(
        a_ms=6.5,
        c_ms=0.11,
        t0_ms=12.0,
        prefill_tok_s=25_000.0,
        max_num_seqs=256,
        max_model_len=8192,
        kv_cache_tokens=400_000,  # (72 - 16 - 4) GB / 128 KiB
    ),
    # Scaled from weight bytes, no measurement found (§3).
    "llama-3b-h100": LatencyProfile(
        a_ms=3.5,
        c_ms=0.05,
        t0_ms=10.0,
        prefill_tok_s=60_000.0,
        max_num_seqs=256,
        max_model_len=8192,
        kv_cache_tokens=540_000,  # (72 - 6.4 - 4) GB / 112 KiB
    ),
    # Scaled, anchored on #19/#21; treat as +-50% (§3).
    "llama-70b-4xh100": LatencyProfile(
        a_ms=18.0,
        c_ms=0.25,
        t0_ms=30.0,
        prefill_tok_s=8_000.0,
        max_num_seqs=256,
        max_model_len=8192,
        kv_cache_tokens=400_000,  # (288 - 141 - 16) GB / 320 KiB
    ),
    # Scaled (§3).
    "llama-70b-8xh100": LatencyProfile(
        a_ms=12.0,
        c_ms=0.15,
        t0_ms=25.0,
        prefill_tok_s=14_000.0,
        max_num_seqs=256,
        max_model_len=8192,
        kv_cache_tokens=1_200_000,  # (576 - 141 - 32) GB / 320 KiB
    ),
}

DEFAULT_PROFILE = "llama-8b-h100"
