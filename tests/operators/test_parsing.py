"""Parsing what models answer."""

from operators.parsing import extract_boxed, extract_choice, extract_json, first_word


def test_json_is_found_in_fences_and_prose():
    assert extract_json('Here:\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('The answer is {"a": {"b": [1, 2]}} as shown.') == {"a": {"b": [1, 2]}}


def test_braces_inside_json_strings_do_not_confuse_the_parser():
    assert extract_json('{"text": "x } y", "n": 1}') == {"text": "x } y", "n": 1}


def test_truncated_or_missing_json_is_none():
    assert extract_json('{"a": 1') is None
    assert extract_json("no json here") is None
    assert extract_json("[1, 2, 3]") is None


def test_boxed_answer_is_the_last_box_with_nested_braces():
    assert extract_boxed(r"first \boxed{1}, finally \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_boxed("no box") is None
    assert extract_boxed(r"\boxed{unclosed") is None


def test_first_word_ignores_markup_and_case():
    assert first_word("**Yes**, it does.") == "yes"
    assert first_word("") == ""


def test_choice_is_the_last_option_letter_the_answer_commits_to():
    assert extract_choice("First (A)... no. Answer: (C)") == "C"
    assert extract_choice("So the answer is B.") == "B"
    assert extract_choice("answer: (d)") == "D"
    assert extract_choice(r"The result is \boxed{E}") == "E"
    assert extract_choice("Answer: (B)\nOn reflection, Answer: (F)") == "F"


def test_no_choice_in_chatter_placeholders_or_unknown_letters():
    assert extract_choice("The answer is a bit unclear to me.") is None
    assert extract_choice("Reply with 'Answer: (X)'.") is None
    assert extract_choice("Answer: (E)", letters="ABCD") is None
    assert extract_choice("") is None
