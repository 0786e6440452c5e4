"""Domain errors of the server; :mod:`.app` maps each to one HTTP status in one place."""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BodyTooLargeError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NotReadyError",
    "QueueFullError",
    "RequestTimeoutError",
    "ServingError",
]


class ServingError(Exception):
    """A request the server cannot serve; the message is safe to show the caller."""

    code = "server_error"
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequestError(ServingError):
    """The request breaks a limit or is malformed."""

    code = "invalid_request_error"


class ModelNotFoundError(ServingError):
    """The request names a model this server does not serve."""

    code = "model_not_found"


class AuthenticationError(ServingError):
    """A missing or wrong API key."""

    code = "invalid_api_key"


class BodyTooLargeError(ServingError):
    """The request body exceeds the configured size."""

    code = "request_too_large"


class QueueFullError(ServingError):
    """Every slot and queue place is taken; the caller should retry later."""

    code = "rate_limit_exceeded"


class NotReadyError(ServingError):
    """The model is still loading (or failed to load)."""

    code = "model_not_ready"


class RequestTimeoutError(ServingError):
    """Generation ran past the per-request timeout and was cancelled."""

    code = "timeout"
