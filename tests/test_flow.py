"""The Flow API: building a graph, its validation, and where rows go next."""

import pytest

from streamflow import END, Drop, Flow, FlowError, Message, Operator, RowError


class Echo(Operator):
    async def __call__(self, row, ctx):
        return row


def row(**fields):
    return Message(id="0:0", fields=fields)


def three_steps():
    return Flow("demo").step("a", Echo()).step("b", Echo()).step("c", Echo())


def test_steps_run_in_declaration_order_and_the_last_leads_to_end():
    flow = three_steps()
    assert flow.first == "a"
    assert [flow.next_step(name, row()) for name in ("a", "b", "c")] == ["b", "c", END]


def test_edge_overrides_declaration_order():
    flow = three_steps().edge("a", "c")
    assert flow.next_step("a", row()) == "c"


def test_route_chooses_per_row_and_may_loop_back():
    flow = three_steps().route("c", lambda r: "a" if r["turn"] < 3 else END)
    assert flow.next_step("c", row(turn=1)) == "a"
    assert flow.next_step("c", row(turn=3)) == END


def test_route_to_unknown_step_fails_only_that_row():
    flow = three_steps().route("b", lambda r: "drafter")
    with pytest.raises(RowError, match="route from 'b' returned 'drafter'; known steps: a, b, c, END") as info:
        flow.next_step("b", row())
    assert info.value.kind == "route"


def test_router_exception_is_a_route_error_of_the_row():
    flow = three_steps().route("b", lambda r: r["missing"])
    with pytest.raises(RowError, match="route from 'b' raised KeyError") as info:
        flow.next_step("b", row())
    assert info.value.kind == "route"


def test_edge_to_unknown_step_fails_at_validation():
    flow = three_steps().edge("a", "nowhere")
    with pytest.raises(FlowError, match="edge from 'a' goes to unknown step 'nowhere'"):
        flow.validate()


def test_route_from_unknown_step_fails_at_build_time():
    with pytest.raises(FlowError, match="route from unknown step 'x'"):
        three_steps().route("x", lambda r: END)


def test_duplicate_step_name_is_refused():
    with pytest.raises(FlowError, match="declared twice"):
        three_steps().step("a", Echo())


@pytest.mark.parametrize("name", ["", "1abc", "has space", END])
def test_bad_step_names_are_refused(name):
    with pytest.raises(FlowError, match="is not valid"):
        Flow("demo").step(name, Echo())


def test_empty_flow_fails_validation():
    with pytest.raises(FlowError, match="has no steps"):
        Flow("demo").validate()


def test_a_step_has_either_an_edge_or_a_route():
    with pytest.raises(FlowError, match="already has an edge"):
        three_steps().edge("a", "c").route("a", lambda r: END)


def test_plain_async_function_is_a_step():
    async def upper(r, ctx):
        return r.with_fields(text=r["text"].upper())

    flow = Flow("demo").step("upper", upper)
    assert flow.first == "upper"


def test_sync_function_is_refused_with_the_fix():
    with pytest.raises(FlowError, match="async def step"):
        Flow("demo").step("x", lambda r, ctx: r)


def test_replicas_must_be_positive():
    with pytest.raises(FlowError, match="replicas=0"):
        Flow("demo").step("a", Echo(), replicas=0)


def test_fields_collects_declared_columns_in_step_order():
    class A(Operator):
        fields = {"x": int}

    class B(Operator):
        fields = {"y": str}

    flow = Flow("demo").step("a", A()).step("b", B())
    assert flow.fields() == {"x": int, "y": str}


def test_conflicting_field_types_fail():
    class A(Operator):
        fields = {"x": int}

    class B(Operator):
        fields = {"x": str}

    with pytest.raises(FlowError, match="field 'x' is declared as"):
        Flow("demo").step("a", A()).step("b", B()).fields()


def test_drop_needs_a_reason():
    with pytest.raises(ValueError, match="non-empty reason"):
        Drop("")
