"""Which steps share an actor: neighbours that ask for the same resources, unless one opts out."""

from streamflow.config import OperatorConfig
from streamflow.runtime.row.fusion import fuse_steps


def names(**operators):
    return [group.name for group in fuse_steps(operators)]


def test_consecutive_steps_with_the_same_resources_share_an_actor():
    assert names(read=OperatorConfig(), ask=OperatorConfig(), judge=OperatorConfig()) == ["read+ask+judge"]


def test_a_step_with_other_replicas_or_cpus_gets_actors_of_its_own():
    groups = fuse_steps(
        {
            "a": OperatorConfig(),
            "b": OperatorConfig(replicas=4),
            "c": OperatorConfig(replicas=4),
            "d": OperatorConfig(num_cpus=1.0, replicas=4),
        }
    )
    assert [(g.name, g.replicas, g.num_cpus) for g in groups] == [("a", 1, 0.0), ("b+c", 4, 0.0), ("d", 4, 1.0)]


def test_a_step_that_opts_out_is_fused_with_neither_neighbour():
    assert names(a=OperatorConfig(), b=OperatorConfig(fuse=False), c=OperatorConfig()) == ["a", "b", "c"]


def test_fusion_follows_declaration_order_not_equality_alone():
    same = OperatorConfig()
    assert names(a=same, b=OperatorConfig(replicas=2), c=same) == ["a", "b", "c"]
