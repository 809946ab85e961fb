"""Where service actors run: on the driver's node, so they outlive the loss of any other node."""

from __future__ import annotations

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

__all__ = ["on_this_node"]


def on_this_node() -> NodeAffinitySchedulingStrategy:
    """A scheduling strategy that pins an actor to the node of the calling process."""
    import ray

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
