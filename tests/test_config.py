"""Composing the run config: engine defaults, pipeline defaults, command-line overrides."""

import typing

import pytest

from streamflow.config import compose
from streamflow.errors import ConfigError
from streamflow.services.sim.profile import PROFILES, ProfileName

DEFAULTS = {"input": {"path": "data.parquet"}, "operators": {"question": {"replicas": 1}}, "params": {"thr": 0.8}}


def test_overrides_win_over_pipeline_defaults():
    cfg = compose(DEFAULTS, ["operators.question.replicas=4", "params.thr=0.9", "max_inflight=2000", "limit=500"])
    assert cfg.operators["question"].replicas == 4
    assert cfg.params == {"thr": 0.9}
    assert cfg.max_inflight == 2000 and cfg.limit == 500
    assert cfg.input.path == "data.parquet"


def test_llm_endpoint_override_switches_off_the_simulator():
    cfg = compose(DEFAULTS, ["llm.base_url=http://host:8000/v1", "llm.model=llama"])
    assert not cfg.llm.uses_sim and cfg.llm.urls() == ["http://host:8000/v1"]
    assert compose(DEFAULTS).llm.uses_sim


def one_line_error(override, defaults=DEFAULTS):
    with pytest.raises(ConfigError) as info:
        compose(defaults, [override])
    message = str(info.value)
    assert "\n" not in message
    return message


def test_wrong_type_names_the_key_and_its_value_in_one_line():
    assert one_line_error("max_inflight=lots") == "config: max_inflight=lots; expected `int`, got `str`."


def test_an_unknown_key_suggests_the_closest_one():
    assert one_line_error("max_inflght=10") == "config: unknown key 'max_inflght'; did you mean 'max_inflight'?"
    assert one_line_error("llm.bse_url=http://x/v1").endswith("did you mean 'llm.base_url'?")
    assert one_line_error("operators.questoin.replicas=2").endswith("did you mean 'operators.question.replicas'?")
    assert one_line_error("params.thrr=0.5").endswith("did you mean 'params.thr'?")


def test_an_unknown_key_added_with_plus_suggests_the_closest_one_too():
    assert one_line_error("+max_inflght=10") == "config: unknown key 'max_inflght'; did you mean 'max_inflight'?"
    message = one_line_error("+operators.question.replicaz=2")
    assert message == "config: unknown key 'operators.question.replicaz'; did you mean 'operators.question.replicas'?"


def test_an_unknown_key_far_from_every_key_lists_the_keys_beside_it():
    message = one_line_error("operators.nope.replicas=2")
    assert message == "config: unknown key 'operators.nope.replicas'; the keys under operators are: question."
    assert "input.limit" in one_line_error("input.limit=3") and "partitions" in one_line_error("input.limit=3")


def test_a_new_entry_of_an_open_mapping_is_added_with_plus():
    message = one_line_error("llm.models.teacher=[http://host:8000/v1]")
    assert message == (
        "config: llm.models.teacher is not in the config yet; add it with +llm.models.teacher=[http://host:8000/v1]."
    )
    assert compose(DEFAULTS, ["+llm.models.teacher=[http://host:8000/v1]"]).llm.models == {
        "teacher": ["http://host:8000/v1"]
    }


def test_missing_input_path_is_named():
    with pytest.raises(ConfigError, match=r"input\.path is required"):
        compose({}, [])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_inflight=0", "config: max_inflight=0; expected `int` >= 1."),
        ("input.partitions=0", "config: input.partitions=0; expected `int` >= 1."),
        ("limit=-1", "config: limit=-1; expected `int` >= 1 (a number of rows, or null for all)."),
        ("operators.question.replicas=0", "config: operators.question.replicas=0; expected `int` >= 1."),
        ("events.sample=1.5", "config: events.sample=1.5; expected `float` <= 1.0 (the share of rows recorded,"),
        ("sandbox.timeout_s=0", "config: sandbox.timeout_s=0; expected `float` > 0.0."),
        ("llm.backend=openai", "config: llm.backend=openai needs llm.base_url"),
        ("+llm.models.big=[big-server:8000]", 'config: llm.models.big=["big-server:8000"]; expected `str` matching'),
        ("+llm.models.big=[]", "config: llm.models.big=[]; expected `array` of length >= 1 (endpoint URLs like"),
    ],
)
def test_bad_values_are_refused_naming_the_key_and_what_it_accepts(override, message):
    assert one_line_error(override).startswith(message)


def test_limit_zero_names_the_limit_key():
    message = one_line_error("limit=0")
    assert message.startswith("config: limit=0;") and "input.limit" not in message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mode=foo", "config: mode=foo; use one of: row, batch."),
        ("progress=x", "config: progress=x; use one of: auto, bar, log, off."),
        ("llm.backend=gpt", "config: llm.backend=gpt; use one of: auto, sim, openai, vllm, sglang, llamacpp, none."),
        ("sandbox.backend=docker", "config: sandbox.backend=docker; use one of: bubblewrap, apptainer."),
        ("cluster=k8s", "config: cluster=k8s; use one of: local, slurm."),
    ],
)
def test_a_value_outside_a_set_lists_the_valid_values(override, message):
    assert one_line_error(override) == message


def test_every_simulator_profile_can_be_configured():
    assert set(typing.get_args(ProfileName)) == set(PROFILES)
    for name in PROFILES:
        assert compose(DEFAULTS, [f"llm.sim.profile={name}"]).llm.sim.profile == name
    assert one_line_error("llm.sim.profile=gpt4").startswith("config: llm.sim.profile=gpt4; use one of: llama-8b-h100,")


def test_malformed_override_is_a_config_error():
    with pytest.raises(ConfigError, match="max_inflight"):
        compose(DEFAULTS, ["max_inflight"])


def test_api_key_is_read_from_the_named_variable_and_not_kept_in_the_config(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret")
    cfg = compose(DEFAULTS, ["llm.api_key_env=MY_KEY"])
    assert cfg.api_key() == "sk-secret"
    assert "sk-secret" not in str(cfg.to_dict())


def test_a_pipeline_default_for_one_operator_knob_leaves_the_others_settable(tmp_path):
    from streamflow.run import prepare

    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a"}\n')
    pipeline = tmp_path / "two_steps.py"
    pipeline.write_text(
        "from streamflow import Flow\n"
        "async def same(row, ctx):\n"
        "    return row\n"
        f"DEFAULTS = {{'input': {{'path': {str(data)!r}}}, 'operators': {{'first': {{'replicas': 2}}}}}}\n"
        "def build(params):\n"
        "    return Flow('two').step('first', same).step('second', same)\n"
    )
    _, cfg, *_ = prepare(pipeline, ["operators.first.fuse=false", "operators.first.concurrency=4"])
    first = cfg.operators["first"]
    assert (first.replicas, first.fuse, first.concurrency) == (2, False, 4)
