"""``python -m demo.idp_serve``: the demo identity provider as a service of its own (used by docker-compose).

Configured by ``SSF_DEMO_IDP_*`` variables (:class:`demo.idp_settings.IdPSettings`).
"""

from __future__ import annotations

import argparse

import uvicorn

from demo.idp import DemoIdP
from demo.idp_settings import IdPSettings
from demo.publisher import TransmitterPublisher

__all__ = ["build", "main"]


def build(settings: IdPSettings) -> DemoIdP:
    publisher = None
    if settings.transmitter_url:
        if not settings.publisher_client_id or settings.publisher_client_secret is None:
            raise ValueError("publishing needs SSF_DEMO_IDP_PUBLISHER_CLIENT_ID and _SECRET")
        publisher = TransmitterPublisher(
            settings.transmitter_url,
            settings.publisher_client_id,
            settings.publisher_client_secret.get_secret_value(),
            token_endpoint=settings.publisher_token_endpoint,
        )
    return DemoIdP(
        settings.issuer,
        audience=settings.audience,
        publisher=publisher,
        token_lifetime=settings.token_lifetime,
        oauth_clients=settings.clients(),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m demo.idp_serve",
        description="Run the demo identity provider, configured by SSF_DEMO_IDP_* variables.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
    parser.add_argument("--port", type=int, default=9000, help="TCP port.")
    args = parser.parse_args(argv)
    try:
        idp = build(IdPSettings())
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    uvicorn.run(idp.app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
