"""The one error hierarchy of the protocol core, and its wire codes.

::

    SSFError                         (err, description, status_code)
    ├── SETError                     a Security Event Token was refused (RFC 8935 §2.3/2.4)
    │   ├── InvalidRequest           invalid_request: not a parsable SET, or a payload
    │   │   ├── InvalidSubject           that does not match its definition
    │   │   ├── InvalidEvent
    │   │   ├── SETTooLarge
    │   │   └── DuplicateJTI             a different SET reusing a seen jti
    │   ├── InvalidKey               invalid_key: no acceptable key or algorithm
    │   │   └── (ssf.set.UnknownKeyID)   the kid is not in the JWKS: refresh it, retry once
    │   ├── InvalidIssuer            invalid_issuer
    │   ├── InvalidAudience          invalid_audience
    │   ├── AuthenticationFailed     authentication_failed: signature or push credential failed
    │   ├── AccessDenied             access_denied
    │   └── InvalidState             invalid_state (SSF §8.1.4.1): wrong verification state
    ├── ModelError                   a management or poll body does not fit its model (400)
    └── KeyMaterialError             key material unusable (load, generate, sign): 500

Every SETError renders the RFC 8935 body ``{"err": ..., "description": ...}``; the
mapping from class to code lives only here (the ``err`` class attribute).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "SET_ERROR_CODES",
    "AccessDenied",
    "AuthenticationFailed",
    "DuplicateJTI",
    "InvalidAudience",
    "InvalidEvent",
    "InvalidIssuer",
    "InvalidKey",
    "InvalidRequest",
    "InvalidState",
    "InvalidSubject",
    "KeyMaterialError",
    "ModelError",
    "SETError",
    "SETTooLarge",
    "SSFError",
]


class SSFError(Exception):
    """Base of every error the core raises; carries its wire code and a safe description."""

    err: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.err)
        self.description = description or self.err

    def to_body(self) -> dict[str, str]:
        """The RFC 8935 §2.3 / RFC 8936 error object."""
        return {"err": self.err, "description": self.description}


class SETError(SSFError):
    """A SET that must be refused; the receiver answers 400 with :meth:`to_body`."""


class InvalidRequest(SETError):
    err = "invalid_request"


class InvalidSubject(InvalidRequest):
    """A subject identifier that breaks RFC 9493 or SSF §3."""


class InvalidEvent(InvalidRequest):
    """An event payload that does not match its event type's definition."""


class SETTooLarge(InvalidRequest):
    """A SET over the configured size limit."""


class DuplicateJTI(InvalidRequest):
    """RFC 8417 §2.2: a jti names one SET; another SET reusing it is an error."""


class InvalidKey(SETError):
    err = "invalid_key"


class InvalidIssuer(SETError):
    err = "invalid_issuer"


class InvalidAudience(SETError):
    err = "invalid_audience"


class AuthenticationFailed(SETError):
    err = "authentication_failed"


class AccessDenied(SETError):
    err = "access_denied"


class InvalidState(SETError):
    err = "invalid_state"


class ModelError(SSFError):
    """A stream-management or poll body that does not fit its model."""

    err = "invalid_request"


class KeyMaterialError(SSFError):
    """Key material that cannot be loaded, generated or used for signing."""

    err = "invalid_key"
    status_code = 500


#: Every registered SET error code (IANA "Security Event Token Error Codes" + SSF).
SET_ERROR_CODES: frozenset[str] = frozenset(
    {
        "invalid_request",
        "invalid_key",
        "invalid_issuer",
        "invalid_audience",
        "authentication_failed",
        "access_denied",
        "invalid_state",
    }
)
