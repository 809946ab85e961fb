"""Cheap filters that run before any LLM call: language and length."""

from __future__ import annotations

from typing import Any

from streamflow import Context, Drop, Message, Operator, RowError

__all__ = ["LanguageFilter", "LengthFilter", "text_of"]


def text_of(row: Message, field: str) -> str:
    """The row's ``field`` as text; a missing, null or non-string value is a row error."""
    if field not in row:
        msg = f"row {row.id!r} has no field {field!r}"
        raise RowError(msg, kind="bad_input")
    value = row[field]
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        msg = f"field {field!r} of row {row.id!r} is {kind}, expected text"
        raise RowError(msg, kind="bad_input")
    return value


class LanguageFilter(Operator):
    """Keep rows whose text is ``language`` with probability >= ``min_score``.

    Uses py3langid, whose model ships inside the package (no download at run time).
    Only the first ``sample_chars`` characters are classified: enough for a reliable
    answer, and a 5 MB document costs no more than a short one.
    """

    fields = {"language": str, "language_score": float}

    def __init__(
        self, field: str = "text", *, language: str = "en", min_score: float = 0.8, sample_chars: int = 2000
    ) -> None:
        self.field = field
        self.language = language
        self.min_score = min_score
        self.sample_chars = sample_chars
        self.reason = f"not_{_LANGUAGE_NAMES.get(language, language)}"
        self._identifier: Any = None

    async def setup(self, ctx: Context) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    async def __call__(self, row: Message, ctx: Context) -> Message | Drop:
        text = text_of(row, self.field)
        language, score = self._identifier.classify(text[: self.sample_chars])
        found = {"language": language, "language_score": round(float(score), 4)}
        if language != self.language or score < self.min_score:
            return Drop(self.reason, **found)
        return row.with_fields(**found)


class LengthFilter(Operator):
    """Keep rows whose text has between ``min_chars`` and ``max_chars`` characters."""

    def __init__(self, field: str = "text", *, min_chars: int = 0, max_chars: int | None = None) -> None:
        self.field = field
        self.min_chars = min_chars
        self.max_chars = max_chars

    async def __call__(self, row: Message, ctx: Context) -> Message | Drop:
        length = len(text_of(row, self.field))
        if length < self.min_chars:
            return Drop("too_short")
        if self.max_chars is not None and length > self.max_chars:
            return Drop("too_long")
        return row


_LANGUAGE_NAMES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian"}
