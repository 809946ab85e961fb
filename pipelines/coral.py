"""Collaborative reasoning (Coral; Matrix paper §5.1): a teacher and a student discuss a problem until they agree.

    problems ──► pose ──► teacher ──► student ──► verdict ──► Parquet
                            ▲           │  │         ▲
                            └─ differ ──┘  └─ agree or turn limit
                            (and the same from teacher to student)

After every turn from the second on, the router looks at the last two answers: the same letter
ends the dialogue by agreement; otherwise the other agent speaks, until ``max_turns`` turns. The
conversation lives in the row's orchestrator state (``state.history``, ``state.turn``);
``verdict`` writes it out with the answers, whether the agents agreed, and whether the agreed
answer is the reference one ("agreement correctness", Coral's quality metric).

Input: MMLU-Pro's columns (``question``, ``options``, ``answer`` as a letter); the bundled sample
(``pipelines/data/coral_sample.parquet``) has them. Prompts are in ``pipelines/prompts/coral/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from operators import Prompt, Speaker
from operators.parsing import extract_choice
from streamflow import Context, Flow, Message, Operator, RowError

HERE = Path(__file__).parent
PROMPTS = HERE / "prompts" / "coral"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

DEFAULTS = {"input": {"path": str(HERE / "data" / "coral_sample.parquet")}}


class Params(msgspec.Struct, forbid_unknown_fields=True):
    """Knobs of this pipeline (``params.<name>=...`` on the command line)."""

    max_turns: int = 6  # turns of both agents together; a dialogue without agreement stops here
    teacher_model: str | None = None  # None: llm.model (the paper used Llama-3.1-8B-Instruct for both)
    student_model: str | None = None
    temperature: float = 0.7
    max_tokens: int = 512  # per turn
    answer_column: str = "answer"  # the reference letter; a missing one leaves `correct` null


class Turn(msgspec.Struct):
    role: str
    content: str
    answer: str | None


class Pose(Operator):
    """Letter the options and write the problem the agents discuss; a malformed problem is a row error."""

    fields = {"problem": str}

    async def __call__(self, row: Message, ctx: Context) -> Message:
        question, options = row["question"], row["options"]
        if not isinstance(question, str) or not question.strip():
            raise RowError(f"row {row.id!r}: question is empty", kind="bad_input")
        if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
            raise RowError(
                f"row {row.id!r}: options must be a list of 2 to 26 choices, got {options!r}", kind="bad_input"
            )
        lettered = "\n".join(f"({letter}) {option}" for letter, option in zip(LETTERS, options, strict=False))
        return row.with_fields(problem=f"{question.strip()}\n\n{lettered}")


class Verdict(Operator):
    """Write the dialogue out and judge it: the agents' last answers, agreement, correctness."""

    fields = {
        "dialogue": list[Turn],
        "turns": int,
        "teacher_answer": str | None,
        "student_answer": str | None,
        "agreed": bool,
        "agreed_answer": str | None,
        "correct": bool | None,
    }

    def __init__(self, answer_column: str) -> None:
        self.answer_column = answer_column

    async def __call__(self, row: Message, ctx: Context) -> Message:
        history = row.state.history
        last = {turn["role"]: turn["answer"] for turn in history}
        agreed = agreement(history)
        reference = row.get(self.answer_column)
        correct = None if not isinstance(reference, str) else agreed is not None and agreed == reference.strip().upper()
        return row.with_fields(
            dialogue=history,
            turns=len(history),
            teacher_answer=last.get("teacher"),
            student_answer=last.get("student"),
            agreed=agreed is not None,
            agreed_answer=agreed,
            correct=correct,
        )


def agreement(history: list[dict[str, Any]]) -> str | None:
    """The answer both agents gave in the last two turns, or None if they differ (or one gave none)."""
    if len(history) < 2:
        return None
    previous, last = history[-2], history[-1]
    if previous["role"] == last["role"] or last["answer"] is None:
        return None
    return last["answer"] if last["answer"] == previous["answer"] else None


def build(params: Params) -> Flow:
    def speaker(role: str, model: str | None) -> Speaker:
        return Speaker(
            role,
            system=Prompt((PROMPTS / f"{role}.md").read_text()),
            opening=Prompt((PROMPTS / "problem.md").read_text()),
            parse=extract_choice,
            model=model,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
        )

    def after(partner: str) -> Any:
        def route(row: Message) -> str:
            done = agreement(row.state.history) is not None or row.state.turn >= params.max_turns
            return "verdict" if done else partner

        return route

    flow = Flow("coral", requires=["question", "options"])
    flow.step("pose", Pose())
    flow.step("teacher", speaker("teacher", params.teacher_model))
    flow.step("student", speaker("student", params.student_model))
    flow.step("verdict", Verdict(params.answer_column))
    flow.route("teacher", after("student"))
    flow.route("student", after("teacher"))
    return flow


def metrics(data: pl.LazyFrame) -> dict[str, float]:
    """Coral's quality figures over the finished dialogues (an unagreed dialogue counts as incorrect)."""
    dialogues = data.filter(pl.col("status") == "ok")
    figures = dialogues.select(
        pl.len().alias("dialogues"),
        pl.col("agreed").mean().alias("agreement rate"),
        pl.col("correct").fill_null(False).mean().alias("agreement correctness"),
        pl.col("turns").mean().alias("mean turns"),
        (~pl.col("agreed")).sum().alias("dialogues at the turn limit"),
    ).collect()
    return {name: value for name, value in figures.row(0, named=True).items() if value is not None}
