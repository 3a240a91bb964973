"""How a failed HTTP exchange with the transmitter is told to an operator.

The class name alone ("ConnectError") hides the reason that matters most, e.g. that the
transmitter's TLS certificate did not verify; the message is kept, bounded in length.
"""

from __future__ import annotations

__all__ = ["describe"]


def describe(exc: BaseException, limit: int = 300) -> str:
    """``ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] ...`` (or the bare class name)."""
    name = type(exc).__name__
    detail = str(exc).strip() or str(exc.__cause__ or "").strip()
    if not detail:
        return name
    text = f"{name}: {' '.join(detail.split())}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
