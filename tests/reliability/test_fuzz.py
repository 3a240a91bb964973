"""Hostile input against both services on real loopback servers.

- schemathesis drives every operation of each service's OpenAPI schema (the generated schema,
  with the request bodies of the ``ssf`` models laid over it, since the handlers read raw
  bodies); hypothesis strategies add SETs, subjects and poll bodies that are almost right.
- Every answer is below 500, carries a JSON error body when it is a 4xx, never a traceback,
  and a refused request changes no state (the transmitter's tables, the receiver's state).

Bounded: a few examples per operation (the default run stays fast).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st

from receiver.app import create_app as create_receiver_app
from receiver.core import Receiver
from receiver.settings import ReceiverSettings
from receiver.store import MemoryStore
from ssf.events import SessionRevoked
from ssf.keys import PublicKeys, generate_signing_key
from ssf.poll import PollRequest
from ssf.set import SecurityEventToken, sign_set
from ssf.stream import StreamRequest, StreamStatus, VerificationRequest
from ssf.subjects import Subject
from tests.reliability.support import SESSION_REVOKED
from tests.ssf.strategies import ANY_SUBJECT, JSON, JSON_OBJECTS
from tests.support.services import free_port, serve
from transmitter.app import create_app
from transmitter.service import Transmitter
from transmitter.settings import TransmitterSettings

FUZZ = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _components(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    defs = schema.pop("$defs", {})
    return schema, defs


SUBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"format": {"type": "string"}, "email": {"type": "string"}, "id": {"type": "string"}},
}


def transmitter_schema(app: Any) -> dict[str, Any]:
    """The app's own schema with request bodies and query parameters filled in."""
    raw = app.openapi()
    comps: dict[str, Any] = raw.setdefault("components", {}).setdefault("schemas", {})
    bodies: dict[tuple[str, str], dict[str, Any]] = {}
    for path, method, model in [
        ("/ssf/streams", "post", StreamRequest),
        ("/ssf/streams", "patch", StreamRequest),
        ("/ssf/streams", "put", StreamRequest),
        ("/ssf/status", "post", StreamStatus),
        ("/ssf/verify", "post", VerificationRequest),
        ("/ssf/poll/{stream_id}", "post", PollRequest),
    ]:
        body, defs = _components(model)
        comps.update(defs)
        bodies[(path, method)] = body
    for path in ("/ssf/subjects:add", "/ssf/subjects:remove"):
        bodies[(path, "post")] = {
            "type": "object",
            "properties": {"stream_id": {"type": "string"}, "subject": SUBJECT_SCHEMA, "verified": {}},
        }
    bodies[("/events", "post")] = {
        "type": "object",
        "properties": {
            "subject": SUBJECT_SCHEMA,
            "events": {"type": "object", "properties": {SESSION_REVOKED: {"type": "object"}}},
            "txn": {"type": "string"},
        },
    }
    for (path, method), body in bodies.items():
        op = raw["paths"].get(path, {}).get(method)
        if op is not None:
            op["requestBody"] = {"content": {"application/json": {"schema": body}}}
    for path, method in [("/ssf/streams", "get"), ("/ssf/streams", "delete"), ("/ssf/status", "get")]:
        op = raw["paths"].get(path, {}).get(method)
        if op is not None:
            op["parameters"] = [{"name": "stream_id", "in": "query", "schema": {"type": "string"}}]
    return dict(raw)


def _snapshot(db: Path) -> str:
    """Every row of every table (SQLite), hashed: equal hashes = no state change."""
    con = sqlite3.connect(db)
    try:
        h = hashlib.sha256()
        tables = [
            r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        for t in tables:
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")') if r[1] != "last_activity"]
            for row in con.execute(f'SELECT {",".join(cols)} FROM "{t}" ORDER BY 1'):
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        con.close()


def _check_answer(resp: Any, before: str, after: str) -> None:
    status = resp.status_code
    text = resp.text
    assert status < 500, f"{status}: {text[:300]}"
    assert "Traceback" not in text
    if 400 <= status < 500:
        body = json.loads(text)
        assert isinstance(body, dict) and ("err" in body or "error" in body), text[:200]
        assert before == after, f"a refused request ({status}) changed state: {text[:200]}"


@pytest.fixture(scope="module")
def tx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Transmitter, Path, str]]:
    tmp = tmp_path_factory.mktemp("fuzz-tx")
    port = free_port()
    db = tmp / "tx.db"
    s = TransmitterSettings(
        issuer=f"http://127.0.0.1:{port}",
        dev_mode=True,
        database_url=f"sqlite:///{db}",
        secret_file=tmp / "secret",
        signing_alg="ES256",
        long_poll_timeout=0.2,
        min_verification_interval=0,
        worker_poll_interval=0.5,
    )
    tx = Transmitter(s)
    info, _ = tx.auth.add_client("fuzzer", ["ssf.read", "ssf.manage", "ssf.publish"])
    token = tx.auth.issue_token(info, None)["access_token"]
    app = create_app(transmitter=tx)
    with serve(app, port=port) as url:
        yield url, tx, db, token
    tx.close()


def test_transmitter_schema_fuzz(tx_server: tuple[str, Transmitter, Path, str]) -> None:
    url, tx, db, token = tx_server
    app = create_app(transmitter=tx)
    schema = schemathesis.openapi.from_dict(transmitter_schema(app))
    # a stream that exists, so generated bodies sometimes reach the stream look-up
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        assert http.post("/ssf/streams", json={}).status_code == 201
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 12
    for op in ops:

        @given(case=op.as_strategy())
        @FUZZ
        def run(case: Any) -> None:
            before = _snapshot(db)
            auth = {"Authorization": f"Bearer {token}"} if secrets.randbelow(4) else {}
            resp = case.call(base_url=url, headers=auth, timeout=10)
            _check_answer(resp, before, _snapshot(db))

        run()


POLL_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "maxEvents": st.one_of(st.integers(-(2**70), 2**70), JSON),
            "returnImmediately": st.one_of(st.booleans(), JSON),
            "ack": st.one_of(st.lists(st.text(max_size=40), max_size=5), JSON),
            "setErrs": st.one_of(
                st.dictionaries(
                    st.text(max_size=10),
                    st.fixed_dictionaries({"err": st.text(max_size=10), "description": st.text(max_size=10)}),
                    max_size=3,
                ),
                JSON,
            ),
        },
    ),
    JSON,
)


def test_transmitter_hypothesis_bodies(tx_server: tuple[str, Transmitter, Path, str]) -> None:
    url, _tx, db, token = tx_server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        r = http.post("/ssf/streams", json={"events_requested": [SESSION_REVOKED]})
        assert r.status_code == 201
        sid = r.json()["stream_id"]

        @given(body=POLL_BODIES)
        @FUZZ
        def poll(body: Any) -> None:
            before = _snapshot(db)
            resp = http.post(f"/ssf/poll/{sid}", json=body)
            _check_answer(resp, before, _snapshot(db))

        @given(subject=st.one_of(ANY_SUBJECT, JSON), payload=st.one_of(JSON_OBJECTS, JSON), txn=JSON)
        @FUZZ
        def publish(subject: Any, payload: Any, txn: Any) -> None:
            before = _snapshot(db)
            resp = http.post(
                "/events", json={"subject": subject, "events": {SESSION_REVOKED: payload}, "txn": txn}
            )
            _check_answer(resp, before, _snapshot(db))

        @given(subject=st.one_of(ANY_SUBJECT, JSON), verified=JSON)
        @FUZZ
        def subjects(subject: Any, verified: Any) -> None:
            before = _snapshot(db)
            resp = http.post(
                "/ssf/subjects:add", json={"stream_id": sid, "subject": subject, "verified": verified}
            )
            _check_answer(resp, before, _snapshot(db))

        poll()
        publish()
        subjects()
        # hostile framing: deep JSON, huge bodies, wrong media, broken UTF-8
        for body in [b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b"\xff\xfe", b"x" * 200_000]:
            before = _snapshot(db)
            resp = http.post("/ssf/streams", content=body, headers={"Content-Type": "application/json"})
            _check_answer(resp, before, _snapshot(db))
            assert resp.status_code in (400, 413)


# --- the receiver -------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rx_server() -> Iterator[tuple[str, Receiver, str, str]]:
    key = generate_signing_key("ES256", kid="fz-1")
    issuer = "https://tx.example"
    settings_ = ReceiverSettings(
        database_url="memory",
        delivery="push",
        out_of_band=True,
        push_authorization="Bearer fz",
        push_auth_failure_limit=100_000,
    )
    rcv = Receiver(settings_, store=MemoryStore())
    rcv.configure(issuer, PublicKeys.from_jwks({"keys": [key.public_jwk()]}), audience="https://rx.example")
    app = create_receiver_app(settings_, receiver=rcv, protected_demo=True)
    good = sign_set(
        SecurityEventToken.create(
            iss=issuer, aud="https://rx.example", sub_id=Subject.opaque("fz-session"), event=SessionRevoked()
        ),
        key,
    )
    with serve(app) as url:
        yield url, rcv, good, "Bearer fz"


def _mutations(token: str) -> st.SearchStrategy[str]:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    return st.one_of(
        st.text(max_size=200),
        st.integers(0, len(token)).map(lambda i: token[:i]),
        st.tuples(st.integers(0, len(token) - 1), st.characters()).map(
            lambda p: token[: p[0]] + p[1] + token[p[0] + 1 :]
        ),
        JSON.map(lambda j: f"{_b64(json.dumps(j).encode())}.{body}.{sig}"),
        st.builds(
            lambda extra: f"{head}.{_b64(json.dumps({**claims, **extra}).encode())}.{sig}",
            st.dictionaries(
                st.sampled_from(["iss", "aud", "jti", "iat", "sub_id", "events", "sub", "exp"]), JSON
            ),
        ),
        st.just(_b64(b'{"alg":"none","typ":"secevent+jwt"}') + f".{body}."),
    )


def _rx_state(rcv: Receiver) -> tuple[Any, ...]:
    return (tuple(sorted(rcv.state.counts().items())), len(rcv.jtis))


def test_receiver_schema_and_set_fuzz(rx_server: tuple[str, Receiver, str, str]) -> None:
    url, rcv, good, auth = rx_server
    raw = create_receiver_app(
        ReceiverSettings(database_url="memory", out_of_band=True), receiver=rcv, protected_demo=True
    ).openapi()
    raw["paths"]["/ssf/push"] = {
        "post": {
            "parameters": [{"name": "Authorization", "in": "header", "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/secevent+jwt": {"schema": {"type": "string"}}}},
            "responses": {"202": {"description": "accepted"}},
        }
    }
    raw["paths"]["/protected/whoami"] = {
        "get": {
            "parameters": [{"name": "Authorization", "in": "header", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "ok"}},
        }
    }
    schemathesis.openapi.media_type("application/secevent+jwt", _mutations(good).map(str.encode))
    schema = schemathesis.openapi.from_dict(raw)
    for op in [r.ok() for r in schema.get_all_operations()]:

        @given(case=op.as_strategy())
        @FUZZ
        def run(case: Any) -> None:
            before = _rx_state(rcv)
            resp = case.call(base_url=url, timeout=10)
            _check_answer(resp, repr(before), repr(_rx_state(rcv)))

        run()

    with httpx.Client(base_url=url, timeout=10) as http:

        @given(token=_mutations(good))
        @FUZZ
        def push(token: str) -> None:
            before = _rx_state(rcv)
            resp = http.post(
                "/ssf/push",
                content=token.encode("utf-8", "surrogatepass"),
                headers={"Authorization": auth, "Content-Type": "application/secevent+jwt"},
            )
            _check_answer(resp, repr(before), repr(_rx_state(rcv)))

        push()
        # the untouched SET is still accepted: the fuzzing refused only what was wrong
        r = http.post(
            "/ssf/push",
            content=good,
            headers={"Authorization": auth, "Content-Type": "application/secevent+jwt"},
        )
        assert r.status_code == 202
