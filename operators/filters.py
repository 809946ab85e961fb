"""Cheap filters that run before any LLM call: language and length."""

from __future__ import annotations

import logging
import lzma
import os
import shutil
from array import array
from pathlib import Path
from typing import Any

from streamflow import Context, Drop, Message, Operator, RowError

__all__ = ["LanguageFilter", "LengthFilter", "text_of"]

log = logging.getLogger(__name__)


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

    Uses py3langid, whose model ships inside the package (no download at run time); the first
    start on a machine decompresses it into ``$XDG_CACHE_HOME/streamflow`` (else ``~/.cache``, 68 MB).
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
        self._identifier = language_identifier()

    async def __call__(self, row: Message, ctx: Context) -> Message | Drop:
        text = text_of(row, self.field)
        language, score = self._identifier.classify(text[: self.sample_chars])
        found = {"language": language, "language_score": round(float(score), 4)}
        if language != self.language or score < self.min_score:
            return Drop(self.reason, **found)
        return row.with_fields(**found)


def language_identifier() -> Any:
    """py3langid's identifier, its model decompressed once per machine into the user's cache.

    The model ships LZMA-compressed: decompressing it took 0.6 s of every actor's start (and of
    every restart). Any surprise in the cache or the model's layout falls back to py3langid's own loader.
    """
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    try:
        model = _cached_model()
        return LanguageIdentifier(
            model["ptc"],
            model["pc"],
            model["classes"].tolist(),
            _words(model["nextmove"]),
            model["out_feat"].tolist(),
            norm_probs=True,
            tk_row=_words(model["nextmove_row"]),
        )
    except Exception as exc:  # a cache is an optimization: never the reason a run fails
        log.debug("language model cache not used: %s: %s", type(exc).__name__, exc)
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _cached_model() -> dict[str, Any]:
    """The arrays of py3langid's model from the cache; a cached file that cannot be read is written again."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    source = MODEL_DIR / MODEL_FILE
    stat = source.stat()
    cached = _cache_dir() / f"py3langid-model-{stat.st_size}-{int(stat.st_mtime)}.npz"
    if not cached.exists():
        _decompress(source, cached)
    try:
        return _arrays(cached)
    except Exception as exc:  # damaged from outside (writes are atomic): decompress it again, once
        log.info("the cached language model %s cannot be read (%s); decompressing it again", cached, exc)
        cached.unlink(missing_ok=True)
        _decompress(source, cached)
        return _arrays(cached)


def _arrays(path: Path) -> dict[str, Any]:
    import numpy as np

    with np.load(path, allow_pickle=False) as model:
        return {name: model[name] for name in model.files}


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamflow"


def _decompress(source: Path, target: Path) -> None:
    """Write ``source`` decompressed to ``target`` atomically (actors starting together may race)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with lzma.open(source) as compressed, open(partial, "wb") as plain:
            shutil.copyfileobj(compressed, plain, length=1 << 20)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _words(values: Any) -> array[int]:
    """An unsigned NumPy array as the stdlib ``array`` py3langid's tables are."""
    words: array[int] = array({2: "H", 4: "I", 8: "L"}[values.dtype.itemsize])
    words.frombytes(values.tobytes())
    return words


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
