"""LLM steps against scripted answers: labels, JSON with chatter, and what weak models say."""

import msgspec

from operators import ChatJSON, Classify, Prompt
from streamflow import Flow
from streamflow.testing import fake_llm, run_local


class Scores(msgspec.Struct):
    clarity: int
    depth: int


def classify_flow():
    prompt = Prompt("Is this about maths? $text Answer Yes or No.")
    return Flow("t").step("classify", Classify(prompt, into="label", keep={"yes"}, reason="off_topic"))


def test_prompt_fills_fields_and_cuts_long_values():
    from streamflow import Message

    messages = Prompt("A: $text", system="be brief", max_field_chars=5).render(
        Message(id="1", fields={"text": "abcdefgh"})
    )
    assert messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "A: abcde"}]


def test_classifier_keeps_yes_with_punctuation_and_drops_no():
    answers = {"a": "Yes.", "b": "**No**"}
    llm = fake_llm(lambda p: answers[p["messages"][0]["content"].split()[4]])
    [yes, no] = run_local(classify_flow(), [{"text": "a"}, {"text": "b"}], llm=llm)
    assert yes.status == "ok" and yes["label"] == "yes"
    assert no.status == "filtered:off_topic" and no["label"] == "no" and no["llm_raw"] == "**No**"


def test_prompt_field_missing_from_row_is_a_bad_input_error():
    [row] = run_local(classify_flow(), [{"body": "x"}], llm=fake_llm(lambda p: "Yes"))
    assert row.status == "error:bad_input" and "no field 'text'" in row.error


def json_flow(check=None):
    step = ChatJSON(Prompt("Rate: $text"), Scores, into="scores", check=check)
    return Flow("t").step("rate", step)


def test_json_inside_fences_and_chatter_is_parsed_into_a_struct_field():
    llm = fake_llm(lambda p: 'Sure!\n```json\n{"clarity": 4, "depth": "3"}\n```\nHope it helps.')
    [row] = run_local(json_flow(), [{"text": "doc"}], llm=llm)
    assert row.status == "ok" and row["scores"] == {"clarity": 4, "depth": 3}


def test_malformed_json_filters_the_row_and_keeps_the_raw_answer():
    llm = fake_llm(lambda p: '{"clarity": 4, "depth": ')
    [row] = run_local(json_flow(), [{"text": "doc"}], llm=llm)
    assert row.status == "filtered:no_json" and row["llm_raw"] == '{"clarity": 4, "depth": '


def test_json_with_wrong_keys_is_no_json():
    [row] = run_local(json_flow(), [{"text": "doc"}], llm=fake_llm(lambda p: '{"something": "else"}'))
    assert row.status == "filtered:no_json"


def test_refusal_is_no_json():
    [row] = run_local(json_flow(), [{"text": "doc"}], llm=fake_llm(lambda p: "I cannot help with that."))
    assert row.status == "filtered:no_json"


def test_check_turns_a_parsed_but_weak_answer_into_its_reason():
    flow = json_flow(check=lambda s: "low_score" if min(s.clarity, s.depth) <= 0 else None)
    [row] = run_local(flow, [{"text": "doc"}], llm=fake_llm(lambda p: '{"clarity": 0, "depth": 5}'))
    assert row.status == "filtered:low_score" and row["scores"] == {"clarity": 0, "depth": 5}


def test_failed_llm_call_is_a_row_error_not_a_filter():
    from streamflow.services.llm import Response

    llm = fake_llm(lambda p: Response(400, b'{"error": {"message": "bad"}}'))
    [row] = run_local(json_flow(), [{"text": "doc"}], llm=llm)
    assert row.status == "error:llm_bad_request"


def test_flattened_json_fields_become_columns():
    flow = Flow("t").step("rate", ChatJSON(Prompt("Rate: $text"), Scores))
    assert flow.fields() == {"clarity": int, "depth": int, "llm_raw": str}
    [row] = run_local(flow, [{"text": "doc"}], llm=fake_llm(lambda p: '{"clarity": 1, "depth": 2}'))
    assert row["clarity"] == 1 and row["depth"] == 2
