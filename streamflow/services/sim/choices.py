"""Multiple-choice dialogue replies: agents that state an answer letter, disagree, and converge over turns.

A conversation qualifies when it lists options as lines ``(A) ...``/``A. ...`` and asks for a final
line ``Answer: (X)``. The simulated model has no idea which option is right: it holds a per-question
favourite (the same for every agent using the same model name, so self-collaboration tends to agree),
answers with it about half the time on its own, and once a partner has answered it adopts the
partner's answer with a probability that grows with every turn it has already spoken. Dialogues thus
end by agreement after a few turns or run into the caller's turn limit, and the chosen answers are
right about as often as chance over the options, which a test double may honestly be.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from streamflow.services.sim.draws import Draws, stable_key
from streamflow.services.sim.filler import Vocabulary
from streamflow.services.sim.server_config import SimConfig

__all__ = ["answer_letters", "asks_for_choice", "choice_reply"]

_ASK = re.compile(r"answer:\s*\(\s*x\s*\)", re.IGNORECASE)
_OPTION = re.compile(r"^\s*\(?([A-Z])[).:]\s+\S", re.MULTILINE)
_ANSWER = re.compile(r"answer:\s*\(\s*([A-Z])\s*\)", re.IGNORECASE)
_CONVICTION = 0.55  # how often an agent answering on its own picks the model's favourite
_ADOPT_FIRST = 0.25  # chance to adopt the partner's differing answer on an agent's first turn...
_ADOPT_STEP = 0.1  # ...growing by this much with every turn the agent has spoken...
_ADOPT_FAVOURITE = 0.1  # ...and higher when the partner's answer is the model's own favourite
_ADOPT_MAX = 0.9
_KEEP_OWN = 0.75  # not adopting: stay with one's previous answer rather than think again
_REASONING_MEDIAN_TOKENS = 170.0
_REASONING_SIGMA = 0.45
_AGREE = (
    "I agree with your answer; the steps check out.",
    "Your reasoning is right, and I reach the same result.",
    "Yes, that matches what I get.",
)
_DISAGREE = (
    "I do not think that is right. Let me go through it again.",
    "I get a different result; one of the steps does not hold.",
    "Let me check that more carefully, because I disagree.",
)
_OPEN = ("Let me work through this step by step.", "Let us solve it carefully.", "Here is how I would approach it.")


def asks_for_choice(messages: Sequence[tuple[str, str]]) -> bool:
    """Whether the conversation lists lettered options and asks for ``Answer: (X)``."""
    text = "\n".join(content for _, content in messages)
    return _ASK.search(text) is not None and len(answer_letters(messages)) >= 2


def answer_letters(messages: Sequence[tuple[str, str]]) -> str:
    """The option letters of the first message that lists options, in order from A (e.g. ``"ABCD"``)."""
    for _, content in messages:
        letters = "".join(dict.fromkeys(_OPTION.findall(content)))
        run = ""
        for expected, letter in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", letters, strict=False):
            if letter != expected:
                break
            run += letter
        if len(run) >= 2:
            return run
    return ""


def choice_reply(
    messages: Sequence[tuple[str, str]], model: str, key: bytes, config: SimConfig, max_tokens: int
) -> str:
    """One agent's turn: some reasoning about the problem, then ``Answer: (L)`` (sometimes left out)."""
    letters = answer_letters(messages)
    question = next(content for _, content in messages if _OPTION.search(content))
    favourite = Draws(stable_key(config.seed, model, question), "favourite").choice(letters)
    own = _answers(messages, "assistant", letters)
    partner = _answers(messages, "user", letters)
    draws = Draws(key, "choice")
    if partner and partner[-1] != (own[-1] if own else None):
        adopt = min(_ADOPT_MAX, _ADOPT_FIRST + _ADOPT_STEP * len(own) + _ADOPT_FAVOURITE * (partner[-1] == favourite))
        if draws.chance(adopt):
            answer = partner[-1]
        elif own and draws.chance(_KEEP_OWN):
            answer = own[-1]
        else:
            answer = _own_pick(draws, letters, favourite)
    elif partner:
        answer = partner[-1]  # both already say the same: stay there
    else:
        answer = own[-1] if own else _own_pick(draws, letters, favourite)
    lead = draws.choice(_AGREE if partner and answer == partner[-1] else _DISAGREE if partner else _OPEN)
    vocabulary = Vocabulary(question)
    tokens = min(max(20, round(draws.lognormal(_REASONING_MEDIAN_TOKENS, _REASONING_SIGMA))), max_tokens)
    body = vocabulary.text(draws, tokens)
    if draws.chance(config.missing_boxed_rate):
        return f"{lead}\n\n{body}"
    return f"{lead}\n\n{body}\n\nAnswer: ({answer})"


def _own_pick(draws: Draws, letters: str, favourite: str) -> str:
    return favourite if draws.chance(_CONVICTION) else draws.choice(letters)


def _answers(messages: Sequence[tuple[str, str]], role: str, letters: str) -> list[str]:
    """Answer letters stated in ``role``'s messages, in order (the ``(X)`` of the instruction is not one)."""
    found: list[str] = []
    for speaker, content in messages:
        if speaker == role:
            found.extend(letter.upper() for letter in _ANSWER.findall(content) if letter.upper() in letters)
    return found
