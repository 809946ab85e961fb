"""Prompt-aware Yes/No decisions: prompts that look like reasoning (digits, math, argument words) get more Yes.

Used for classifier prompts such as "Does this document contain reasoning? Answer Yes or No", so that
a filter step in a simulated pipeline keeps a realistic share of rows and keeps the right kind of rows.
"""

from __future__ import annotations

import math
import re
import string

__all__ = ["asks_yes_or_no", "reasoning_score", "yes_probability"]

_ASK = re.compile(r"answer\s+yes\s+or\s+no", re.IGNORECASE)
_SEPARATORS = str.maketrans(dict.fromkeys(string.punctuation + string.digits, " "))
_MATH = "=+<>%^×÷±≤≥≠√∑∫"
_KEYWORDS = frozenset(
    {
        "because", "therefore", "thus", "hence", "example", "calculate", "compute", "equation", "solve",
        "derive", "why", "how", "if", "then", "probability", "prove", "proof", "theorem",
    }
)  # fmt: skip

# Feature levels of a typical English technical document, which scores 0: digits and math symbols per
# 100 characters, argument words per 100 words, words. Fitted so that with yes_rate 0.15 the mean and the
# median P(Yes) over 531 local documents (prose of the Rust book, reference and Cargo guide; Debian
# package READMEs; Python package descriptions) are 0.16 and 0.15. A short document without any digit,
# symbol or argument word gets about a third of yes_rate.
_TYPICAL_DIGITS_PC = 0.8
_TYPICAL_MATH_PC = 0.4
_TYPICAL_KEYWORDS_PC = 1.1
_TYPICAL_WORDS = 300
_MAX_SHIFT = 4.0


def asks_yes_or_no(text: str) -> bool:
    """Whether a message asks for a bare Yes/No answer ("Answer Yes or No", any case)."""
    return _ASK.search(text) is not None


def reasoning_score(text: str) -> float:
    """Log-odds shift in [-4, 4]: >0 when the text is denser in digits, math symbols and argument words than usual.

    Each feature enters as the log of its (smoothed) ratio to the typical level, so doubling any of them
    moves the score by a similar amount; longer documents get a small bonus (more room for an argument).
    """
    chars = max(len(text), 1)
    words = text.lower().translate(_SEPARATORS).split()
    digits_pc = 100.0 * sum(map(text.count, string.digits)) / chars
    math_pc = 100.0 * sum(map(text.count, _MATH)) / chars
    keywords_pc = 100.0 * sum(map(_KEYWORDS.__contains__, words)) / max(len(words), 1)
    score = (
        0.6 * math.log((digits_pc + 1.0) / (_TYPICAL_DIGITS_PC + 1.0))
        + 0.5 * math.log((math_pc + 1.0) / (_TYPICAL_MATH_PC + 1.0))
        + 1.0 * math.log((keywords_pc + 1.0) / (_TYPICAL_KEYWORDS_PC + 1.0))
        + 0.15 * math.log((len(words) + 100) / (_TYPICAL_WORDS + 100))
    )
    return max(-_MAX_SHIFT, min(_MAX_SHIFT, score))


def yes_probability(text: str, yes_rate: float) -> float:
    """P(Yes): ``yes_rate`` for a typical technical document, shifted in log-odds by ``reasoning_score``."""
    if yes_rate <= 0.0 or yes_rate >= 1.0:
        return yes_rate
    logit = math.log(yes_rate / (1.0 - yes_rate)) + reasoning_score(text)
    return 1.0 / (1.0 + math.exp(-logit))
