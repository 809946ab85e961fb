"""NaturalReasoning curation (Matrix paper §4.2): web documents -> reasoning questions.

    documents ──► english ──► classify ──► score ──► question ──► Parquet
                  │            │            │          │
                  not_english  classifier   low_score  no_json / no_question /
                                            no_json    no_answer / no_boxed

Every row ends in the output: ``ok`` with its question, or ``filtered:<reason>`` at the
step that rejected it (with the model's raw answer in ``llm_raw`` when there was one).
Prompts are in ``pipelines/prompts/natural_reasoning/``.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from operators import ChatJSON, Classify, LanguageFilter, Prompt
from operators.parsing import extract_boxed
from streamflow import Flow

HERE = Path(__file__).parent
PROMPTS = HERE / "prompts" / "natural_reasoning"

DEFAULTS = {"input": {"path": str(HERE / "data" / "natural_reasoning_sample.parquet")}}


class Params(msgspec.Struct, forbid_unknown_fields=True):
    """Knobs of this pipeline (``params.<name>=...`` on the command line)."""

    english_min_score: float = 0.8
    classifier_doc_chars: int = 2000  # a Yes/No screen needs the start of a document, not all of it
    max_doc_chars: int = 6000
    classifier_model: str | None = None  # None: llm.model (the paper used a small 3B classifier)
    generator_model: str | None = None  # None: llm.model (the paper used a 70B model)
    question_max_tokens: int = 1024


class Scores(msgspec.Struct):
    completeness: int
    complexity: int
    correctness: int
    reasoning: int


class Question(msgspec.Struct):
    """The generated columns; ``final_answer`` is what the solution put in its box."""

    question: str = ""
    category: str = ""
    reference_answer: str = ""
    solution: str = ""
    final_answer: str = ""

    def __post_init__(self) -> None:
        self.final_answer = extract_boxed(self.solution) or ""


def low_score(scores: Scores) -> str | None:
    return "low_score" if min(msgspec.structs.astuple(scores)) <= 0 else None


def unusable_question(q: Question) -> str | None:
    if not q.question.strip():
        return "no_question"
    if not q.solution.strip():
        return "no_answer"
    if extract_boxed(q.solution) is None:
        return "no_boxed"
    return None


def prompt(name: str, max_doc_chars: int) -> Prompt:
    return Prompt((PROMPTS / f"{name}.md").read_text(), max_field_chars=max_doc_chars)


def build(params: Params) -> Flow:
    flow = Flow("natural_reasoning", requires=["text"])
    flow.step("english", LanguageFilter("text", language="en", min_score=params.english_min_score))
    flow.step(
        "classify",
        Classify(
            prompt("classify", params.classifier_doc_chars),
            into="reasoning_label",
            keep={"yes"},
            reason="classifier",
            model=params.classifier_model,
        ),
    )
    flow.step(
        "score",
        ChatJSON(
            prompt("score", params.max_doc_chars),
            Scores,
            into="scores",
            check=low_score,
            max_tokens=128,
            model=params.generator_model,
        ),
    )
    flow.step(
        "question",
        ChatJSON(
            prompt("question", params.max_doc_chars),
            Question,
            check=unusable_question,
            max_tokens=params.question_max_tokens,
            model=params.generator_model,
        ),
    )
    return flow
