"""Why an LLM call failed, as a row error kind (``error:llm_<kind>``).

LLMError (RowError)
 ├── LLMConnectionError    no replica reachable after retries      llm_connection
 ├── LLMTimeout            no answer within the request timeout     llm_timeout
 ├── LLMRateLimited        429 after every retry                    llm_rate_limited
 ├── LLMServerError        5xx after every retry                    llm_server_error
 ├── LLMBadRequest         400/404/422: retrying cannot help        llm_bad_request
 │    └── LLMContextLength the prompt does not fit the model        llm_context_length
 └── LLMBadResponse        200 with a body that is not a completion llm_bad_response
"""

from __future__ import annotations

from streamflow.errors import RowError


class LLMError(RowError):
    """An LLM call failed; only the row that made it is marked as an error."""

    kind = "llm"
    retryable = False


class LLMConnectionError(LLMError):
    kind = "llm_connection"
    retryable = True


class LLMTimeout(LLMError):
    kind = "llm_timeout"
    retryable = True


class LLMRateLimited(LLMError):
    kind = "llm_rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMServerError(LLMError):
    kind = "llm_server_error"
    retryable = True


class LLMBadRequest(LLMError):
    kind = "llm_bad_request"


class LLMContextLength(LLMBadRequest):
    kind = "llm_context_length"


class LLMBadResponse(LLMError):
    kind = "llm_bad_response"
