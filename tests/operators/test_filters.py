"""Filters before the LLM: language (with a shipped model) and length."""

import numpy as np
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from operators import LanguageFilter, LengthFilter
from operators.filters import language_identifier
from streamflow import Flow
from streamflow.testing import run_local

ENGLISH = "The function returns zero on success; otherwise it returns minus one and sets errno to indicate the error."
GERMAN = "Die Funktion gibt bei Erfolg null zurück; andernfalls gibt sie minus eins zurück und setzt errno."


def language_flow():
    return Flow("t").step("english", LanguageFilter("text", language="en", min_score=0.8))


def test_english_is_kept_and_other_languages_are_filtered_as_not_english():
    kept, dropped = run_local(language_flow(), [{"text": ENGLISH}, {"text": GERMAN}])
    assert kept.status == "ok" and kept["language"] == "en" and kept["language_score"] >= 0.8
    assert dropped.status == "filtered:not_english" and dropped["language"] == "de"


def test_null_or_non_string_text_is_a_bad_input_error_not_a_filter():
    null, number = run_local(language_flow(), [{"text": None}, {"text": 42}])
    assert null.status == "error:bad_input" and "is null" in null.error
    assert number.status == "error:bad_input" and "is int" in number.error


def test_a_huge_document_is_classified_from_its_beginning():
    [row] = run_local(language_flow(), [{"text": ENGLISH * 50_000}])  # ~5 MB
    assert row.status == "ok"


def test_the_language_model_is_decompressed_once_into_the_users_cache_and_answers_as_py3langid(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shipped = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    first, again = language_identifier(), language_identifier()
    [cached] = (tmp_path / "streamflow").iterdir()
    assert cached.suffix == ".npz"
    for text in (ENGLISH, GERMAN, "这是一个中文句子。"):
        assert first.classify(text) == again.classify(text) == shipped.classify(text)


def test_a_damaged_cached_model_is_decompressed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    language_identifier()
    [cached] = (tmp_path / "streamflow").iterdir()
    cached.write_bytes(b"not a model")
    assert language_identifier().classify(GERMAN)[0] == "de"
    with np.load(cached) as model:
        assert "ptc" in model.files


def test_a_cache_that_cannot_be_written_falls_back_to_the_shipped_model(tmp_path, monkeypatch):
    (tmp_path / "streamflow").write_text("a file where the cache directory should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert language_identifier().classify(GERMAN)[0] == "de"


def test_length_filter_reasons():
    flow = Flow("t").step("len", LengthFilter("text", min_chars=3, max_chars=5))
    short, ok, long = run_local(flow, [{"text": "ab"}, {"text": "abcd"}, {"text": "abcdefg"}])
    assert (short.status, ok.status, long.status) == ("filtered:too_short", "ok", "filtered:too_long")
