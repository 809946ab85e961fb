"""Reusable steps for pipelines. They use only the public streamflow API, never Ray."""

from operators.dialogue import Speaker
from operators.filters import LanguageFilter, LengthFilter
from operators.llm import ChatJSON, Classify, Prompt

__all__ = ["ChatJSON", "Classify", "LanguageFilter", "LengthFilter", "Prompt", "Speaker"]
