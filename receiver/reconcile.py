"""Start-up reconciliation: make the configured stream true at the transmitter (SSF §8.1.1)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from receiver.client import StreamConflict, TransmitterClient, TransmitterError
from ssf import uris
from ssf.stream import StreamConfiguration

__all__ = ["desired_config", "needs_update", "reconcile"]

log = logging.getLogger("receiver.reconcile")


def desired_config(
    *,
    events: list[str],
    delivery: str,
    push_url: str | None,
    push_authorization: str | None,
    description: str | None,
) -> dict[str, Any]:
    """The receiver-supplied properties we want (SSF §8.1.1: events, delivery, description)."""
    if delivery == "push":
        if not push_url:
            raise TransmitterError("push delivery needs SSF_RECEIVER_PUSH_URL")
        method: dict[str, Any] = {"method": uris.PUSH, "endpoint_url": push_url}
        if push_authorization:
            method["authorization_header"] = push_authorization
    else:
        method = {"method": uris.POLL}
    body: dict[str, Any] = {"events_requested": list(events), "delivery": method}
    if description:
        body["description"] = description
    return body


def needs_update(cfg: StreamConfiguration, desired: Mapping[str, Any]) -> bool:
    if set(cfg.events_requested or ()) != set(desired["events_requested"]):
        return True
    want = desired["delivery"]
    if cfg.delivery.method != want["method"]:
        return True
    if want["method"] == uris.PUSH:
        if cfg.delivery.endpoint_url != want.get("endpoint_url"):
            return True
        # The transmitter may hide the authorization header; when it does not echo ours, send it.
        if cfg.delivery.authorization_header != want.get("authorization_header"):
            return True
    return False


def _pick(streams: list[StreamConfiguration], desired: Mapping[str, Any]) -> StreamConfiguration | None:
    want = desired["delivery"]
    for cfg in streams:
        if cfg.delivery.method == want["method"] and cfg.delivery.endpoint_url == want.get("endpoint_url"):
            return cfg
    for cfg in streams:
        if cfg.delivery.method == want["method"]:
            return cfg
    return streams[0] if streams else None


async def reconcile(
    client: TransmitterClient, desired: Mapping[str, Any], *, stream_id: str | None = None
) -> StreamConfiguration:
    """Create the stream, or find and update the existing one; returns its configuration."""
    cfg: StreamConfiguration | None = None
    if stream_id:
        cfg = await client.read(stream_id)
        if cfg is None:
            log.warning("stream %s is unknown to the transmitter; creating a new one", stream_id)
    if cfg is None:
        try:
            return await client.create(desired)
        except StreamConflict:
            # SSF §8.1.1.1: one stream per receiver at this transmitter; find it and reuse it.
            cfg = _pick(await client.list(), desired)
            if cfg is None:
                raise TransmitterError("create answered 409 but no stream is listed") from None
            log.info("reusing existing stream %s", cfg.stream_id)
    if not needs_update(cfg, desired):
        return cfg
    try:
        updated = await client.update(cfg.stream_id, desired)
    except TransmitterError as exc:
        if exc.status != 405:
            raise
        try:
            updated = await client.replace(cfg.stream_id, desired)
        except TransmitterError as exc2:
            if exc2.status != 405:
                raise
            log.warning("the transmitter refuses stream updates; keeping stream %s as is", cfg.stream_id)
            return cfg
    if updated is None:  # 202: pending at the transmitter
        return await client.read(cfg.stream_id) or cfg
    return updated
