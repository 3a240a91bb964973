"""The services of the demo: an identity provider, an SSF transmitter and one API per delivery method.

Each is a real uvicorn server on its own loopback port, in its own thread with its own event
loop, built by the same factories that ``ssf transmitter serve`` and ``ssf receiver serve``
use, with the embedded SQLite default in a temporary directory: nothing to install or
configure, and the start-up costs one import instead of one per service.
(tests/deploy/test_compose_processes.py runs the same services as separate processes.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from demo.idp import DemoIdP
from demo.publisher import TransmitterPublisher
from demo.servers import ServiceThread, free_port
from demo.wiretap import WireTap
from receiver.app import create_app as create_receiver_app
from receiver.settings import ReceiverSettings
from transmitter.app import create_app as create_transmitter_app
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

__all__ = ["API_AUDIENCE", "PROTECTED_PATH", "REQUIRED_ACR", "Api", "Stack"]

#: The logical API both receivers protect: the ``aud`` of the users' access tokens.
API_AUDIENCE: Final = "https://api.example.com"
PROTECTED_PATH: Final = "/protected/whoami"
#: The API's policy: sign-ins weaker than this get an RFC 9470 step-up challenge.
REQUIRED_ACR: Final = "nist-aal2"
#: How long the transmitter holds a long poll open; the receiver waits a little longer. Short,
#: because the transmitter lets open long polls run out before it stops (bounds the shutdown).
LONG_POLL_SECONDS: Final = 1.0

log = logging.getLogger("demo")


@dataclass
class Api:
    """One deployment of the protected API with its SSF receiver."""

    delivery: str
    client_name: str
    client_id: str
    client_secret: str
    service: ServiceThread | None = None
    stream: dict[str, object] = field(default_factory=dict)
    #: What arrived at the receiver's push endpoint (push delivery only).
    tap: WireTap | None = None

    @property
    def name(self) -> str:
        return f"API ({self.delivery})"

    @property
    def url(self) -> str:
        assert self.service is not None
        return self.service.url

    @property
    def protected_url(self) -> str:
        return self.url + PROTECTED_PATH


class Stack:
    """Starts and stops the services; every file lives under ``workdir``."""

    def __init__(self, workdir: Path, deliveries: tuple[str, ...]) -> None:
        self.workdir = workdir
        self.deliveries = deliveries
        self.services: list[ServiceThread] = []
        self.apis: list[Api] = []
        self._ports = {"transmitter": free_port(), "idp": free_port()}
        self.transmitter_url = f"http://127.0.0.1:{self._ports['transmitter']}"
        self.idp_url = f"http://127.0.0.1:{self._ports['idp']}"
        self.tx_values: dict[str, Any] = {
            "issuer": self.transmitter_url,
            "database_url": f"sqlite:///{workdir / 'transmitter.db'}",
            "secret_file": str(workdir / "transmitter.secret"),
            "dev_mode": True,  # http:// issuer and loopback push endpoints
            "allowed_push_destinations": ["127.0.0.1"],
            "long_poll_timeout": LONG_POLL_SECONDS,
        }
        self._publisher: tuple[str, str] | None = None
        self.idp: DemoIdP | None = None

    def register_clients(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """What ``ssf transmitter client add`` does, for each party: the IdP and each API."""
        service = Transmitter(TransmitterSettings(**self.tx_values))
        try:
            made: dict[str, tuple[str, tuple[str, ...]]] = {}
            info, secret = service.auth.add_client("demo-idp", ["ssf.publish"])
            self._publisher = (info.client_id, secret)
            made[info.name] = (info.client_id, info.scopes)
            for delivery in self.deliveries:
                info, secret = service.auth.add_client(f"api-{delivery}", ["ssf.read", "ssf.manage"])
                self.apis.append(Api(delivery, info.name, info.client_id, secret))
                made[info.name] = (info.client_id, info.scopes)
            return made
        finally:
            service.close()

    def _start(self, name: str, app: Any, port: int) -> ServiceThread:
        service = ServiceThread(name, app, port)
        self.services.append(service)
        service.start()
        log.info("%s listening on %s", name, service.url)
        return service

    def start_transmitter_and_idp(self) -> tuple[ServiceThread, ServiceThread]:
        assert self._publisher is not None, "register_clients() first"
        tx = self._start(
            "transmitter",
            create_transmitter_app(TransmitterSettings(**self.tx_values)),
            self._ports["transmitter"],
        )
        publisher = TransmitterPublisher(self.transmitter_url, *self._publisher)
        self.idp = DemoIdP(self.idp_url, audience=API_AUDIENCE, publisher=publisher, trust_env=False)
        idp = self._start("identity provider", self.idp.app, self._ports["idp"])
        return tx, idp

    def receiver_values(self, api: Api, port: int) -> dict[str, Any]:
        return {
            "transmitter_issuer": self.transmitter_url,
            "dev_mode": True,
            "delivery": api.delivery,
            "push_url": f"http://127.0.0.1:{port}/ssf/push" if api.delivery == "push" else None,
            "client_id": api.client_id,
            "client_secret": api.client_secret,
            "database_url": f"sqlite:///{self.workdir / f'receiver-{api.delivery}.db'}",
            "token_issuer": self.idp_url,
            "token_jwks_url": f"{self.idp_url}/jwks.json",
            "token_audience": API_AUDIENCE,
            "required_acr": REQUIRED_ACR,
            "poll_timeout": LONG_POLL_SECONDS + 5,
            "poll_interval": 0.2,
            "backoff_base": 0.1,
            "backoff_max": 1.0,
            "startup_timeout": 30.0,
        }

    def start_apis(self, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
        """Every API with its receiver (start-up creates its stream); each one's ``/health`` once verified."""
        for api in self.apis:
            port = free_port()
            settings = ReceiverSettings(**self.receiver_values(api, port))
            api.tap = WireTap(create_receiver_app(settings, protected_demo=True))
            api.service = self._start(api.name, api.tap, port)
        health: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5, trust_env=False) as http:
            for api in self.apis:
                while True:
                    body = http.get(f"{api.url}/health").json()
                    if body.get("verified"):
                        health[api.name] = dict(body)
                        break
                    if time.monotonic() > deadline:
                        shown = {k: body.get(k) for k in ("ready", "error", "stream_id", "stream_status")}
                        raise RuntimeError(
                            f"{api.name} got no verification SET within {timeout:.0f} s: {shown}"
                        )
                    time.sleep(0.02)
        return health

    def fetch_stream(self, api: Api) -> dict[str, object]:
        """The API's stream as the transmitter knows it, read with the API's own credentials."""
        with httpx.Client(base_url=self.transmitter_url, timeout=10, trust_env=False) as http:
            token = http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials", "scope": "ssf.read"},
                auth=(api.client_id, api.client_secret),
            )
            token.raise_for_status()
            auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
            streams = http.get("/ssf/streams", headers=auth)
            streams.raise_for_status()
            body = streams.json()
            stream = body[0] if isinstance(body, list) and body else body
            if not isinstance(stream, dict) or "stream_id" not in stream:
                raise RuntimeError(f"{api.name} has no stream at the transmitter: {body!r}")
            status = http.get("/ssf/status", params={"stream_id": stream["stream_id"]}, headers=auth)
            status.raise_for_status()
            api.stream = {**stream, "status": status.json().get("status")}
            return api.stream

    def stop(self) -> list[str]:
        """Stop in reverse order (APIs first, so no long poll is cut); names of any that had to be killed."""
        hung = [s.name for s in reversed(self.services) if not s.stop()]
        self.services.clear()
        return hung
