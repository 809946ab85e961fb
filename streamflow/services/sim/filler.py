"""Filler prose built from the prompt's own words, so simulated replies read as being about the prompt."""

from __future__ import annotations

import re

from streamflow.services.sim.draws import Draws
from streamflow.services.sim.tokens import BYTES_PER_TOKEN

__all__ = ["Vocabulary"]

_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_GLUE = ("the", "of", "and", "to", "is", "in", "that", "we", "this", "for", "so", "which", "with", "as", "by")
# Frequent instruction and function words: poor topic words for a reply.
_STOP = frozenset(
    {
        "about", "above", "after", "all", "also", "an", "any", "are", "based", "been", "below", "but", "can",
        "could", "does", "each", "following", "for", "from", "give", "has", "have", "here", "into", "its",
        "make", "more", "most", "must", "not", "only", "other", "our", "please", "provide", "reply", "return",
        "should", "some", "such", "tell", "than", "their", "them", "there", "these", "they", "use", "using",
        "was", "were", "what", "when", "where", "will", "would", "write", "you", "your",
    }
)  # fmt: skip
_FALLBACK = ("result", "value", "method", "case", "step", "system", "model", "data", "answer", "question")
_MAX_WORDS = 512
_CONTENT_SHARE = 0.6


class Vocabulary:
    """Distinct content words of a prompt (first 512), plus glue words, for generating sentences."""

    __slots__ = ("words",)

    def __init__(self, prompt: str) -> None:
        distinct = dict.fromkeys(_WORD.findall(prompt.lower()))
        content = [word for word in distinct if word not in _GLUE and word not in _STOP]
        self.words: tuple[str, ...] = tuple(content[:_MAX_WORDS]) or _FALLBACK

    def topic(self, count: int = 4) -> str:
        """The first few content words, a cheap stand-in for what the prompt is about."""
        return " ".join(self.words[:count])

    def sentence(self, draws: Draws) -> str:
        """One sentence of 8-20 words, about 60% of them taken from the prompt (one draw per word)."""
        content, glue = self.words, _GLUE
        words = []
        for _ in range(draws.integer(8, 20)):
            u = draws.random()
            if u < _CONTENT_SHARE:
                words.append(content[int(u / _CONTENT_SHARE * len(content))])
            else:
                words.append(glue[min(int((u - _CONTENT_SHARE) / (1 - _CONTENT_SHARE) * len(glue)), len(glue) - 1)])
        return " ".join(words).capitalize() + "."

    def text(self, draws: Draws, tokens: int) -> str:
        """Sentences until the text is about ``tokens`` tokens long (it may overshoot by one sentence)."""
        budget = max(tokens, 1) * BYTES_PER_TOKEN
        sentences: list[str] = []
        size = 0
        while size < budget:
            sentence = self.sentence(draws)
            sentences.append(sentence)
            size += len(sentence) + 1
        return " ".join(sentences)
