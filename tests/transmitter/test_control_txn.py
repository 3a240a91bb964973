"""SSF §4.1.9: verification and stream-updated SETs carry a ``txn``, fresh per cause."""

from __future__ import annotations

from ssf import uris
from tests.transmitter.conftest import SESSION_REVOKED, Server


def test_verification_and_stream_updated_sets_carry_a_fresh_txn(server: Server) -> None:
    rx = server.client()
    s = server.create(rx, {"events_requested": [SESSION_REVOKED]})
    sid = s["stream_id"]
    r = server.req("POST", "/ssf/verify", rx, json={"stream_id": sid, "state": "st-txn"})
    assert r.status_code == 204
    v = server.verifier()
    got = server.poll(rx, s, maxEvents=10)["sets"]
    (verification,) = [v.verify(t) for t in got.values()]
    server.tx.set_status(sid, "paused", "maintenance")
    (updated,) = [v.verify(t) for t in server.poll(rx, s, ack=list(got))["sets"].values()]
    assert verification.event_type == uris.VERIFICATION
    assert updated.event_type == uris.STREAM_UPDATED
    txns = [verification.txn, updated.txn]
    for txn in txns:
        assert isinstance(txn, str) and len(txn) >= 16
    assert txns[0] != txns[1]  # two causes, two txns
