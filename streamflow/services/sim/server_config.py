"""Configuration of the simulated LLM server: latency profile, speed, seed, served models, reply quirks."""

from __future__ import annotations

from typing import cast

import msgspec

from streamflow.services.sim.profile import DEFAULT_PROFILE, PROFILES, LatencyProfile, ProfileName

__all__ = ["SimConfig"]

_RATES = (
    "yes_rate",
    "fence_rate",
    "malformed_json_rate",
    "zero_int_rate",
    "missing_boxed_rate",
    "empty_field_rate",
    "refusal_rate",
    "tool_error_rate",
)


class SimConfig(msgspec.Struct, kw_only=True):
    """Everything a ``SimServer`` needs; the defaults mimic Llama-3.1-8B on one H100 under vLLM.

    The ``*_rate`` fields are probabilities per reply. Failure rates inject the mistakes real models make
    in JSON replies so that parsers and retry paths downstream get exercised.
    ``stream_interval_s`` is wall-clock time between streamed chunks: tokens produced in between are
    coalesced into one chunk, which keeps CPU use flat with thousands of concurrent streams.
    """

    profile: str | LatencyProfile = DEFAULT_PROFILE
    time_scale: float = 1.0
    seed: int = 0
    models: list[str] = msgspec.field(default_factory=lambda: ["sim-8b"])
    yes_rate: float = 0.15
    fence_rate: float = 0.20
    malformed_json_rate: float = 0.01
    zero_int_rate: float = 0.07
    missing_boxed_rate: float = 0.03
    empty_field_rate: float = 0.01
    refusal_rate: float = 0.005
    tool_error_rate: float = 0.3  # tool arguments with several candidates (ids, enum values) that take a wrong one
    stream_interval_s: float = 0.1
    prefix_caching: bool = False
    """Skip the prefill of prompt prefixes computed recently, as vLLM V1 and SGLang do by default (``prefix_cache``)."""

    def __post_init__(self) -> None:
        if isinstance(self.profile, str) and self.profile not in PROFILES:
            msg = f"SimConfig: unknown profile {self.profile!r}; known profiles: {', '.join(PROFILES)}."
            raise ValueError(msg)
        if not self.models:
            msg = "SimConfig: models is empty; serve at least one model name, e.g. ['sim-8b']."
            raise ValueError(msg)
        for name in _RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                msg = f"SimConfig: {name} is a probability, got {value}; use a value in [0, 1]."
                raise ValueError(msg)
        if self.stream_interval_s <= 0:
            msg = f"SimConfig: stream_interval_s must be > 0, got {self.stream_interval_s}."
            raise ValueError(msg)

    def latency_profile(self) -> LatencyProfile:
        """The profile itself, looking names up in ``PROFILES``."""
        return PROFILES[cast(ProfileName, self.profile)] if isinstance(self.profile, str) else self.profile
