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
