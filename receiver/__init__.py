"""SSF 1.0 receiver library and service: continuous authorization for a resource server.

Subscribe to a transmitter, validate the SETs it pushes (RFC 8935) or that we poll (RFC 8936),
apply them at once to the token cache and revocation state, and refuse the very next request
a stale token makes::

    from fastapi import FastAPI
    from receiver import ContinuousAuthMiddleware, Receiver, ReceiverSettings

    receiver = Receiver(ReceiverSettings())          # SSF_RECEIVER_* variables
    app = FastAPI(lifespan=receiver.lifespan)         # discovery, stream, verification, poll
    app.add_middleware(ContinuousAuthMiddleware, receiver=receiver)

or run the whole service: ``ssf receiver serve`` (``receiver.app.create_app``).

Modules: ``settings`` (configuration), ``core`` (the engine: validate, dedupe, apply,
persist), ``state`` (revocation state and subject matching), ``effects`` (event → state),
``tokens`` (RFC 9068 / RFC 7662 validation and the token cache), ``policy`` and
``middleware`` (enforcement), ``push`` / ``poll`` (delivery), ``discovery`` / ``client`` /
``reconcile`` (talking to the transmitter), ``store`` / ``redis_store`` (persistence).
"""

from receiver.core import Receiver
from receiver.middleware import ContinuousAuthMiddleware
from receiver.policy import ALLOW, Decision, DefaultPolicy, Policy, RequestContext
from receiver.settings import ReceiverSettings
from receiver.state import SubjectState
from receiver.tokens import Principal

__all__ = [
    "ALLOW",
    "ContinuousAuthMiddleware",
    "Decision",
    "DefaultPolicy",
    "Policy",
    "Principal",
    "Receiver",
    "ReceiverSettings",
    "RequestContext",
    "SubjectState",
]
