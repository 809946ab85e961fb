"""Whether the current Ray actor is a restarted incarnation (it must then rebuild what it lost)."""

from __future__ import annotations

import warnings

__all__ = ["was_restarted"]


def was_restarted() -> bool:
    """True inside an actor that Ray restarted after a crash; False elsewhere (tests, first start)."""
    import ray

    if not ray.is_initialized():
        return False
    try:
        with warnings.catch_warnings():  # Ray warns about an id API it uses itself
            warnings.simplefilter("ignore", DeprecationWarning)
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not inside an actor
        return False
