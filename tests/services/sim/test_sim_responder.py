"""Simulated replies are deterministic, follow the prompt's format, and fail the way real models do."""

from __future__ import annotations

import json
import re
import statistics
from typing import Any

import pytest

from streamflow.services.sim import SimConfig
from streamflow.services.sim.responder import Reply, Responder
from streamflow.services.sim.tokens import count_tokens, truncate_tokens
from streamflow.services.sim.yesno import reasoning_score, yes_probability

TEMPLATE = (
    "Write one exam question about the text below. Reply with JSON only:\n"
    '{"clarity": <integer 0-5>, "difficulty": <integer 0-5>, "question": "<an exam question>", '
    '"category": "<one of: Mathematics, Physics, Computer Science>", '
    '"answer": "<worked solution ending with \\boxed{final answer}>"}\n\n'
    "Text: The kinetic energy of a body of mass m moving at speed v is one half m v squared."
)
NO_FAILURES = SimConfig(
    fence_rate=0.0,
    malformed_json_rate=0.0,
    zero_int_rate=0.0,
    missing_boxed_rate=0.0,
    empty_field_rate=0.0,
    refusal_rate=0.0,
)
# Ordinary technical prose, like the READMEs and manuals the Yes rate was fitted on.
TYPICAL_DOCUMENTS = [
    "Installation. The package requires Python 3.9 or newer and is published on PyPI. Install it with pip, "
    "or add it to the dependencies of your project. The client provides convenient access to the REST API "
    "from applications written in Python. It includes type definitions for all request parameters and "
    "response fields, and offers both synchronous and asynchronous clients. If you use a proxy, set the "
    "HTTPS_PROXY variable before you start the application. Version 2.0 removed the deprecated helpers; "
    "see the migration guide for the list of renamed functions and the new default timeout of 60 seconds.",
    "Configuration is read from the environment at start-up. Each service registers itself with the "
    "discovery layer, exposes a health endpoint on port 8080 and writes structured logs to standard output, "
    "where the collector picks them up and forwards them to the central store. Logs are kept for 14 days. "
    "When a node fails its health check three times in a row, the scheduler drains it and moves its work to "
    "the remaining nodes, because a node that misses three checks is probably gone. Operators can pause this "
    "behaviour during maintenance windows.",
    "This module implements the storage backend. Objects are written to a temporary file first and renamed "
    "into place once the write is complete, so that readers never observe a partial object. Deletion marks "
    "the object as removed and a background task reclaims the space later, by default every 10 minutes. "
    "The backend supports objects of up to 5 GB; if an upload is larger, then it must use the multipart "
    "interface, which splits the data into parts of at least 8 MB and uploads them in parallel.",
    "Our team maintains the documentation site alongside the code. Pages are written in Markdown, reviewed "
    "in pull requests and published automatically after each merge to the main branch. The build takes "
    "about 4 minutes. For example, a change to the tutorial appears on the site shortly after it is merged. "
    "Please open an issue when you find an outdated page or a broken link, and include the page address.",
]
REASONING_DOCUMENT = (
    "Example: calculate the probability that two dice sum to 7. There are 6 * 6 = 36 outcomes. The pairs "
    "(1,6), (2,5), (3,4), (4,3), (5,2), (6,1) give 7, so P = 6/36 = 1/6 ≈ 16.7%. Why? Because each of the "
    "36 outcomes is equally likely, therefore P(sum = 7) = 6/36. If we compute P(sum > 10) then 3/36 < 1/6."
)


def _ask_yes_no(document: str) -> list[tuple[str, str]]:
    return [("user", f"Document:\n{document}\n\nDoes the document contain reasoning? Answer Yes or No.")]


def _json_body(text: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(re.sub(r"^```json\n|\n```$", "", text))
    return body


def test_same_prompt_and_seed_give_the_same_reply() -> None:
    messages = [("system", "You are terse."), ("user", "Explain photosynthesis in plants.")]
    first = Responder(SimConfig(seed=3)).reply("sim-8b", messages, max_tokens=500, seed=7)
    again = Responder(SimConfig(seed=3)).reply("sim-8b", messages, max_tokens=500, seed=7)
    assert first == again


def test_request_seed_temperature_model_and_server_seed_each_change_the_reply() -> None:
    messages = [("user", "Explain photosynthesis in plants.")]
    base = Responder(SimConfig()).reply("sim-8b", messages, max_tokens=500, seed=1)
    variants = [
        Responder(SimConfig()).reply("sim-8b", messages, max_tokens=500, seed=2),
        Responder(SimConfig()).reply("sim-8b", messages, max_tokens=500, seed=1, temperature=0.7),
        Responder(SimConfig()).reply("other", messages, max_tokens=500, seed=1),
        Responder(SimConfig(seed=1)).reply("sim-8b", messages, max_tokens=500, seed=1),
    ]
    assert all(variant.text != base.text for variant in variants)


def test_yes_no_prompt_gets_a_single_token_yes_or_no() -> None:
    replies = {
        Responder(SimConfig()).reply("sim-8b", _ask_yes_no(TYPICAL_DOCUMENTS[0]), max_tokens=5, seed=seed)
        for seed in range(50)
    }
    assert replies == {
        Reply(text="Yes", finish_reason="stop", completion_tokens=1),
        Reply(text="No", finish_reason="stop", completion_tokens=1),
    }


def test_about_yes_rate_of_typical_technical_documents_get_yes() -> None:
    responder = Responder(SimConfig())
    answers = [
        responder.reply("sim-8b", _ask_yes_no(document), max_tokens=1, seed=seed).text
        for document in TYPICAL_DOCUMENTS
        for seed in range(250)
    ]
    assert 0.08 < answers.count("Yes") / len(answers) < 0.25


def test_documents_with_more_reasoning_features_get_yes_more_often() -> None:
    assert reasoning_score(REASONING_DOCUMENT) > 2.0
    assert max(reasoning_score(document) for document in TYPICAL_DOCUMENTS) < 1.0
    responder = Responder(SimConfig())
    answers = [
        responder.reply("sim-8b", _ask_yes_no(REASONING_DOCUMENT), max_tokens=1, seed=s).text for s in range(200)
    ]
    assert answers.count("Yes") / len(answers) > 0.5


def test_yes_rate_sets_the_probability_for_a_typical_document() -> None:
    assert yes_probability(REASONING_DOCUMENT, 0.0) == 0.0
    assert yes_probability(REASONING_DOCUMENT, 0.3) > yes_probability(REASONING_DOCUMENT, 0.15)


def test_json_template_reply_has_the_template_keys_and_types() -> None:
    responder = Responder(NO_FAILURES)
    for seed in range(50):
        body = _json_body(responder.reply("sim-8b", [("user", TEMPLATE)], max_tokens=4000, seed=seed).text)
        assert list(body) == ["clarity", "difficulty", "question", "category", "answer"]
        assert all(isinstance(body[key], int) and 1 <= body[key] <= 5 for key in ("clarity", "difficulty"))
        assert body["category"] in {"Mathematics", "Physics", "Computer Science"}
        assert isinstance(body["question"], str) and body["question"]
        assert re.search(r"\\boxed\{[^{}]+(\{[^{}]*\}[^{}]*)*\}\.$", str(body["answer"]))


def test_json_template_placeholders_for_numbers_and_free_text_are_filled() -> None:
    prompt = 'Rate it. Format: {"score": <number 0-1>, "reason": "<one sentence>"}'
    body = _json_body(Responder(NO_FAILURES).reply("sim-8b", [("user", prompt)], max_tokens=500).text)
    assert isinstance(body["score"], float) and 0.0 <= body["score"] <= 1.0
    assert isinstance(body["reason"], str) and body["reason"]


def test_json_template_replies_break_at_the_configured_rates() -> None:
    responder = Responder(SimConfig())
    replies = [responder.reply("sim-8b", [("user", TEMPLATE)], max_tokens=4000, seed=s).text for s in range(2000)]
    fenced = sum(text.startswith("```json") for text in replies) / len(replies)
    bodies = []
    for text in replies:
        try:
            bodies.append(_json_body(text))
        except json.JSONDecodeError:
            continue
    unparsable = 1 - len(bodies) / len(replies)  # malformed 1% + refusals 0.5%
    zeros = sum(0 in (body["clarity"], body["difficulty"]) for body in bodies) / len(bodies)
    no_boxed = sum("\\boxed{" not in str(body["answer"]) for body in bodies) / len(bodies)
    empty = sum("" in (body["question"], body["answer"]) for body in bodies) / len(bodies)
    assert 0.15 < fenced < 0.25
    assert 0.005 < unparsable < 0.03
    assert 0.05 < zeros < 0.09
    assert 0.015 < no_boxed < 0.05
    assert empty < 0.03


def test_json_template_failures_can_be_switched_off() -> None:
    responder = Responder(NO_FAILURES)
    for seed in range(300):
        body = _json_body(responder.reply("sim-8b", [("user", TEMPLATE)], max_tokens=4000, seed=seed).text)
        assert 0 not in (body["clarity"], body["difficulty"]) and "\\boxed{" in str(body["answer"])


def test_reply_cut_by_max_tokens_ends_with_finish_reason_length_and_is_a_prefix() -> None:
    responder = Responder(SimConfig())
    messages = [("user", "Describe the history of the printing press in Europe.")]
    full = responder.reply("sim-8b", messages, max_tokens=8000, seed=1)
    cut = responder.reply("sim-8b", messages, max_tokens=20, seed=1)
    assert full.finish_reason == "stop" and full.completion_tokens > 20
    assert (cut.finish_reason, cut.completion_tokens) == ("length", 20)
    assert full.text.startswith(cut.text)


def test_cut_json_reply_can_be_invalid_json_like_a_real_engine() -> None:
    text = Responder(NO_FAILURES).reply("sim-8b", [("user", TEMPLATE)], max_tokens=30).text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_free_text_reply_talks_about_words_of_the_prompt() -> None:
    reply = Responder(SimConfig()).reply(
        "sim-8b", [("user", "Describe volcanoes and tectonic plates.")], max_tokens=800
    )
    words = set(re.findall(r"[a-z]+", reply.text.lower()))
    assert {"volcanoes", "tectonic", "plates"} <= words
    assert reply.completion_tokens == count_tokens(reply.text)


def test_free_text_lengths_are_heavy_tailed() -> None:
    responder = Responder(SimConfig())
    lengths = sorted(
        responder.reply("sim-8b", [("user", "Describe the water cycle.")], max_tokens=8000, seed=s).completion_tokens
        for s in range(300)
    )
    median = statistics.median(lengths)
    assert 120 < median < 320
    assert lengths[-3] > 3 * median


def test_token_count_is_about_four_bytes_per_token_and_at_least_one() -> None:
    assert (count_tokens(""), count_tokens("Yes"), count_tokens("abcd"), count_tokens("abcde")) == (0, 1, 1, 2)
    assert count_tokens("é" * 4) == 2
    assert truncate_tokens("ab€cd", 1) == "ab"
