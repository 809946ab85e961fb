"""The LLM service layer: an OpenAI-compatible client over a small transport contract.

``client`` sends requests, ``balancer`` picks a replica (least in flight, circuit breakers),
``transport`` is the contract and its HTTP implementation, ``registry`` tracks a run's endpoints,
``cache`` replays answers, and ``service`` starts and stops the replicas of a run (it imports Ray,
so this package does not import it).
"""

from streamflow.services.llm.client import Completion, LLMClient, StepLLM
from streamflow.services.llm.errors import (
    LLMBadRequest,
    LLMBadResponse,
    LLMConnectionError,
    LLMContextLength,
    LLMError,
    LLMRateLimited,
    LLMServerError,
    LLMTimeout,
)
from streamflow.services.llm.transport import HTTPTransport, Response, Transport
from streamflow.services.llm.usage import Usage, merge_usage

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
