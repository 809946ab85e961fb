"""The LLM service layer: an OpenAI-compatible client over a small transport contract.

``client`` sends requests, ``balancer`` picks a replica (least in flight, circuit breakers),
``transport`` is the contract and its HTTP implementation, ``cache`` replays answers, and
``service`` starts, watches and stops the replicas of a run (it imports Ray, so this package does
not import it). The client and transport load on first use: they pull in aiohttp, which the
processes that only count usage (sinks, the event log) never need.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from streamflow.services.llm.failures import (
    LLMBadRequest,
    LLMBadResponse,
    LLMConnectionError,
    LLMContextLength,
    LLMError,
    LLMRateLimited,
    LLMServerError,
    LLMTimeout,
)
from streamflow.services.llm.usage import Usage, merge_usage

if TYPE_CHECKING:
    from streamflow.services.llm.client import Completion, LLMClient, StepLLM
    from streamflow.services.llm.transport import HTTPTransport, Response, Transport

_LAZY = {
    "Completion": "client",
    "LLMClient": "client",
    "StepLLM": "client",
    "HTTPTransport": "transport",
    "Response": "transport",
    "Transport": "transport",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Completion",
    "HTTPTransport",
    "LLMBadRequest",
    "LLMBadResponse",
    "LLMClient",
    "LLMConnectionError",
    "LLMContextLength",
    "LLMError",
    "LLMRateLimited",
    "LLMServerError",
    "LLMTimeout",
    "Response",
    "StepLLM",
    "Transport",
    "Usage",
    "merge_usage",
]
