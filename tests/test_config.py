"""Composing the run config: engine defaults, pipeline defaults, command-line overrides."""

import pytest

from streamflow.config import compose
from streamflow.errors import ConfigError

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


def test_wrong_type_names_the_key_in_one_line():
    with pytest.raises(ConfigError, match=r"Expected `int`, got `str` - at `\$.max_inflight`") as info:
        compose(DEFAULTS, ["max_inflight=lots"])
    assert "\n" not in str(info.value)


def test_unknown_key_says_how_to_add_it_in_one_line():
    with pytest.raises(ConfigError, match="Could not override 'operators.nope.replicas'") as info:
        compose(DEFAULTS, ["operators.nope.replicas=2"])
    assert "\n" not in str(info.value)


def test_missing_input_path_is_named():
    with pytest.raises(ConfigError, match="input.path is required"):
        compose({}, [])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_inflight=0", "max_inflight=0; use 1 or more"),
        ("input.partitions=0", "input.partitions=0; use 1 or more"),
        ("limit=-1", "limit=-1"),
        ("operators.question.replicas=0", "operators.question.replicas=0"),
        ("llm.backend=openai", "llm.backend=openai needs llm.base_url"),
        ("mode=weird", "mode"),
        ("+llm.models.big=[big-server:8000]", r"llm.models.big needs a list of endpoint URLs"),
        ("+llm.models.big=[]", r"llm.models.big needs a list of endpoint URLs"),
    ],
)
def test_bad_values_are_refused_before_work_starts(override, message):
    with pytest.raises(ConfigError, match=message):
        compose(DEFAULTS, [override])


def test_malformed_override_is_a_config_error():
    with pytest.raises(ConfigError, match="max_inflight"):
        compose(DEFAULTS, ["max_inflight"])


def test_api_key_is_read_from_the_named_variable_and_not_kept_in_the_config(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret")
    cfg = compose(DEFAULTS, ["llm.api_key_env=MY_KEY"])
    assert cfg.api_key() == "sk-secret"
    assert "sk-secret" not in str(cfg.to_dict())
