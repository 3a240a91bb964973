"""HTTP-level errors of the management API, rendered as ``{"err", "description"}``."""

from __future__ import annotations

from ssf.errors import SSFError

__all__ = ["Conflict", "NotFound", "PayloadTooLarge", "TooManyRequests", "UnsupportedMediaType"]


class NotFound(SSFError):
    err = "not_found"
    status_code = 404


class Conflict(SSFError):
    err = "conflict"
    status_code = 409


class PayloadTooLarge(SSFError):
    err = "invalid_request"
    status_code = 413


class UnsupportedMediaType(SSFError):
    err = "invalid_request"
    status_code = 415


class TooManyRequests(SSFError):
    err = "too_many_requests"
    status_code = 429

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after
