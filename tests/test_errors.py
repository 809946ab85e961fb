"""Error kinds become the suffix of a row's ``error:<kind>`` status."""

from streamflow.errors import RowError, SchemaError, error_kind


class LLMTimeoutLike(Exception):
    pass


def test_builtin_exceptions_get_snake_case_kinds():
    assert error_kind(ValueError("x")) == "value_error"
    assert error_kind(KeyError("x")) == "key_error"


def test_acronyms_stay_together():
    assert error_kind(LLMTimeoutLike()) == "llm_timeout_like"


def test_row_error_kind_is_chosen_by_the_raiser():
    assert error_kind(RowError("x", kind="bad_input")) == "bad_input"
    assert error_kind(SchemaError("x")) == "schema"


def test_an_error_raised_inside_an_actor_comes_out_of_ray_with_its_class_and_kind(ray_runtime):
    import pytest
    import ray

    from streamflow.errors import RowError, raised_inside

    @ray.remote
    def fails():
        raise RowError("no sandbox left", kind="sandbox")

    with pytest.raises(ray.exceptions.RayTaskError) as wrapped:
        ray.get(fails.remote())
    inside = raised_inside(wrapped.value)
    assert type(inside) is RowError and inside.kind == "sandbox" and str(inside) == "no sandbox left"


def test_an_error_with_nothing_inside_is_its_own_answer():
    from streamflow.errors import SetupError, raised_inside

    plain = SetupError("bad")
    assert raised_inside(plain) is plain
