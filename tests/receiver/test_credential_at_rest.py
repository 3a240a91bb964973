"""The generated push credential at rest: a dump of SQLite or Redis never shows it, and every
instance (after a restart, or sharing Redis) still accepts the pushes that carry it."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.credential import CredentialBox, PushCredential, load_secret, secret_path
from receiver.redis_store import RedisStore
from receiver.store import SQLStore
from ssf import uris
from ssf.events import SessionRevoked
from ssf.subjects import Subject
from tests.receiver.conftest import Running, run_receiver
from tests.receiver.fake import CLIENT_ID, CLIENT_SECRET, FakeTransmitter
from tests.support.services import free_port, require_redis, serve

Show = Literal["clear", "hidden", "masked"]


class Showing(FakeTransmitter):
    """Answers stream reads with the push header in clear (as the fake stores it), hidden, or
    masked the way ours does ("Bearer ****abcd")."""

    def __init__(self, port: int, show: Show) -> None:
        super().__init__(port)
        self.show = show

    async def streams_ep(self, request: Request) -> Response:
        resp = await super().streams_ep(request)
        if self.show == "clear" or not isinstance(resp, JSONResponse):
            return resp
        data = json.loads(bytes(resp.body))
        for cfg in data if isinstance(data, list) else [data]:
            delivery = cfg.get("delivery") if isinstance(cfg, dict) else None
            if isinstance(delivery, dict) and "authorization_header" in delivery:
                if self.show == "hidden":
                    del delivery["authorization_header"]
                else:
                    delivery["authorization_header"] = "Bearer ****" + delivery["authorization_header"][-4:]
        return JSONResponse(data, status_code=resp.status_code)


@pytest.fixture
def transmitter(request: pytest.FixtureRequest) -> Iterator[Showing]:
    port = free_port()
    fake = Showing(port, getattr(request, "param", "clear"))
    with serve(fake.app, port=port):
        yield fake


def _sent_header(fake: FakeTransmitter) -> str:
    (stream,) = fake.streams.values()
    header = stream["delivery"]["authorization_header"]
    assert isinstance(header, str) and header.startswith("Bearer ")
    return header


def _secret_part(header: str) -> bytes:
    return header.split(" ", 1)[1].encode()


def _sqlite_dump(db: Path) -> bytes:
    """Every byte of the database files and its logical dump."""
    parts = [p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists()]
    with sqlite3.connect(db) as conn:
        parts.append("\n".join(conn.iterdump()).encode())
    return b"\n".join(parts)


def _raw(value: bytes | str) -> bytes:
    """The client returns bytes (no decode_responses); its types say bytes or str."""
    return value if isinstance(value, bytes) else value.encode()


async def _redis_dump(url: str, ns: str) -> bytes:
    store = RedisStore(url, namespace=ns)
    parts: list[bytes] = []
    try:
        async for key in store.redis.scan_iter(match=f"{ns}:*", count=1000):
            parts.append(key)
            kind = await store.redis.type(key)
            if kind == b"hash":
                for f, v in (await store.redis.hgetall(key)).items():
                    parts += [_raw(f), _raw(v)]
            elif kind == b"string":
                parts.append(_raw(await store.redis.get(key) or b""))
    finally:
        await store.redis.aclose()
    return b"\n".join(parts)


def _revoke(rcv: Running, fake: FakeTransmitter, sid: str, auth: str | None) -> int:
    return rcv.push(fake.sign(Subject.opaque(sid), SessionRevoked()), auth=auth).status_code


def test_sqlite_dump_holds_no_credential_and_a_restart_accepts_it(
    transmitter: Showing, tmp_path: Path
) -> None:
    port = free_port()
    with run_receiver(transmitter, tmp_path, port=port, verify_on_start=False) as rcv:
        header = rcv.receiver.push_authorization
        assert header is not None and header == _sent_header(transmitter)
        assert _revoke(rcv, transmitter, "at-rest-1", header) == 202
    dump = _sqlite_dump(tmp_path / "receiver.db")
    assert b"_receiver" in dump and b"push_authorization_sha256" in dump  # the record is there
    assert _secret_part(header) not in dump
    secret = (tmp_path / "receiver.secret").read_bytes()
    assert secret and secret not in dump
    with run_receiver(transmitter, tmp_path, port=port, verify_on_start=False) as rcv:
        assert rcv.receiver.push_authorization == header  # decrypted with the secret file
        assert _revoke(rcv, transmitter, "at-rest-2", header) == 202
        wrong = _revoke(rcv, transmitter, "at-rest-3", header[:-1] + ("A" if header[-1] != "A" else "B"))
        assert wrong == 401
        assert _revoke(rcv, transmitter, "at-rest-4", None) == 401
    assert _secret_part(header) not in _sqlite_dump(tmp_path / "receiver.db")


def test_a_record_stored_in_clear_is_upgraded(transmitter: Showing, tmp_path: Path) -> None:
    port = free_port()
    legacy = "Bearer legacy-" + secrets.token_urlsafe(24)
    sid = "stream_legacy"
    transmitter.streams[sid] = transmitter._config(
        sid,
        {
            "events_requested": [SessionRevoked.event_type],
            "delivery": {
                "method": uris.PUSH,
                "endpoint_url": f"http://127.0.0.1:{port}/ssf/push",
                "authorization_header": legacy,
            },
        },
    )
    db = tmp_path / "receiver.db"

    async def seed() -> None:
        store = SQLStore(f"sqlite:///{db}")
        await store.open()
        await store.save_stream(
            transmitter.issuer, {**transmitter.streams[sid], "_receiver": {"push_authorization": legacy}}
        )
        await store.close()

    asyncio.run(seed())
    with run_receiver(transmitter, tmp_path, port=port, verify_on_start=False) as rcv:
        assert rcv.receiver.stream_id == sid
        assert rcv.receiver.push_authorization == legacy  # the transmitter's credential is kept
        assert _sent_header(transmitter) == legacy
        assert _revoke(rcv, transmitter, "legacy-1", legacy) == 202
    with sqlite3.connect(db) as conn:
        logical = "\n".join(conn.iterdump())
    assert legacy.split(" ", 1)[1] not in logical and "push_authorization_sha256" in logical
    with run_receiver(transmitter, tmp_path, port=port, verify_on_start=False) as rcv:
        assert rcv.receiver.push_authorization == legacy
        assert _revoke(rcv, transmitter, "legacy-2", legacy) == 202


def _redis_pair_settings(tmp_path: Path, ns: str) -> dict[str, Any]:
    return {"redis_url": require_redis(), "redis_namespace": ns, "verify_on_start": False}


def test_instances_sharing_redis_and_secret_accept_the_credential(
    transmitter: Showing, tmp_path: Path
) -> None:
    ns = "ssf-test-" + secrets.token_hex(4)
    common = {**_redis_pair_settings(tmp_path, ns), "secret_file": tmp_path / "shared.secret"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        with run_receiver(transmitter, tmp_path / "a", **common) as one:
            header = one.receiver.push_authorization
            assert header is not None and header == _sent_header(transmitter)
            push_url = f"{one.url}/ssf/push"
            assert _secret_part(header) not in asyncio.run(_redis_dump(common["redis_url"], ns))
            with run_receiver(transmitter, tmp_path / "b", push_url=push_url, **common) as two:
                assert two.receiver.push_authorization == header
                assert _revoke(two, transmitter, "redis-1", header) == 202
                assert _revoke(two, transmitter, "redis-2", "Bearer nope") == 401
                assert _revoke(one, transmitter, "redis-3", header) == 202
        dump = asyncio.run(_redis_dump(common["redis_url"], ns))
        assert f"{ns}:stream:".encode() in dump and b"push_authorization_sha256" in dump
        assert _secret_part(header) not in dump
    finally:
        asyncio.run(RedisStore(require_redis(), namespace=ns).clear())


@pytest.mark.parametrize("transmitter", ["clear", "hidden"], indirect=True)
def test_an_instance_with_another_secret_accepts_pushes_by_digest(
    transmitter: Showing, tmp_path: Path
) -> None:
    """Another key cannot decrypt the stored value; while the transmitter needs nothing sent
    again, that instance keeps the credential and checks pushes against its digest."""
    ns = "ssf-test-" + secrets.token_hex(4)
    common = _redis_pair_settings(tmp_path, ns)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        with run_receiver(transmitter, tmp_path / "a", **common) as one:
            header = one.receiver.push_authorization
            assert header is not None
            n = len(transmitter.requests)
            with run_receiver(transmitter, tmp_path / "b", push_url=f"{one.url}/ssf/push", **common) as two:
                assert two.receiver.push_credential is not None
                # in clear at the transmitter: learnt from there; hidden: the digest only
                expected = header if transmitter.show == "clear" else None
                assert two.receiver.push_authorization == expected
                assert [m for m, _, _ in transmitter.requests[n:]] == ["GET", "GET"]  # no update
                assert _sent_header(transmitter) == header
                assert _revoke(two, transmitter, "digest-1", header) == 202
                assert _revoke(two, transmitter, "digest-2", "Bearer nope") == 401
    finally:
        asyncio.run(RedisStore(require_redis(), namespace=ns).clear())


@pytest.mark.parametrize("transmitter", ["masked"], indirect=True)
def test_an_instance_that_must_resend_replaces_the_credential_for_all(
    transmitter: Showing, tmp_path: Path
) -> None:
    """The transmitter masks the header, so an instance that cannot decrypt it cannot tell
    whether it must be sent again: it makes a new one, and the other instance takes it from
    the shared store on the first push that carries it."""
    ns = "ssf-test-" + secrets.token_hex(4)
    common = _redis_pair_settings(tmp_path, ns)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        with run_receiver(transmitter, tmp_path / "a", **common) as one:
            old = one.receiver.push_authorization
            assert old is not None
            with run_receiver(transmitter, tmp_path / "b", push_url=f"{one.url}/ssf/push", **common) as two:
                new = two.receiver.push_authorization
                assert new is not None and new != old
                assert _sent_header(transmitter) == new
                assert _revoke(two, transmitter, "rot-1", new) == 202
                assert _revoke(one, transmitter, "rot-2", new) == 202  # re-read from Redis
                assert _revoke(one, transmitter, "rot-3", old) == 401
                assert _revoke(two, transmitter, "rot-4", old) == 401
            assert _secret_part(new) not in asyncio.run(_redis_dump(common["redis_url"], ns))
    finally:
        asyncio.run(RedisStore(require_redis(), namespace=ns).clear())


def test_stored_forms() -> None:
    box, other = CredentialBox(b"one"), CredentialBox(b"two")
    cred = PushCredential.generate()
    assert cred.value is not None
    own = cred.to_record(box)
    assert cred.value not in json.dumps(own) and _secret_part(cred.value).decode() not in json.dumps(own)
    assert PushCredential.from_record(own, box) == (cred, False)
    mine, in_clear = PushCredential.from_record(own, other)
    assert mine is not None and mine.value is None and mine.digest == cred.digest and not in_clear
    assert mine.matches(cred.value.encode()) and not mine.matches(b"Bearer x")
    assert PushCredential.from_record({"push_authorization": "Bearer old"}, None) == (
        PushCredential.of("Bearer old"),
        True,
    )
    for bad in (None, "x", {}, {"push_authorization_sha256": "zz"}, {"push_authorization_sha256": "00"}):
        assert PushCredential.from_record(bad, box) == (None, False)
    # a value that is not the one its digest names is not taken
    forged = {**own, "push_authorization_encrypted": box.encrypt("Bearer forged")}
    taken, _ = PushCredential.from_record(forged, box)
    assert taken is not None and taken.value is None


def test_secret_file_location_and_creation(tmp_path: Path) -> None:
    assert secret_path(None, f"sqlite:///{tmp_path}/r.db") == Path(f"{tmp_path}/r.db.secret")
    assert secret_path(None, "postgresql+psycopg://x/y") == Path("ssf-receiver.secret")
    assert secret_path(tmp_path / "s", "sqlite:///r.db") == tmp_path / "s"
    path = tmp_path / "d" / "k.secret"
    assert load_secret(path, create=False) is None
    made = load_secret(path, create=True)
    assert made and load_secret(path, create=True) == made
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["k.secret"]  # no temporary left


def test_instances_creating_the_secret_at_once_all_get_the_same_whole_one(tmp_path: Path) -> None:
    """Several instances starting together on a new deployment: one secret wins, and nobody
    reads it before it is written (an empty secret would derive a public key)."""
    from concurrent.futures import ThreadPoolExecutor

    for attempt in range(20):
        path = tmp_path / str(attempt) / "k.secret"
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda p: load_secret(p, create=True), [path] * 8))
        assert len(set(got)) == 1 and got[0] and got[0] == path.read_bytes()


def test_streams_replace_decrypts_the_stored_credential(
    transmitter: Showing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ssf receiver streams replace` must send the credential again: with the receiver's
    secret it decrypts it; with another it says so and sends nothing."""
    from typer.testing import CliRunner

    from receiver.cli import app

    db = f"sqlite:///{tmp_path}/cli.db"
    sid = "stream_cli"
    transmitter.streams[sid] = transmitter._config(sid, {"events_requested": [SessionRevoked.event_type]})
    secret = tmp_path / "receiver.secret"
    box = CredentialBox(load_secret(secret, create=True) or b"")
    cred = PushCredential.generate()

    async def save() -> None:
        store = SQLStore(db)
        await store.open()
        await store.save_stream(
            transmitter.issuer, {**transmitter.streams[sid], "_receiver": cred.to_record(box)}
        )
        await store.close()

    asyncio.run(save())
    for name, value in {
        "TRANSMITTER_ISSUER": transmitter.issuer,
        "DEV_MODE": "true",
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "DATABASE_URL": db,
        "PUSH_URL": "http://127.0.0.1:9/ssf/push",
        "SECRET_FILE": str(secret),
    }.items():
        monkeypatch.setenv(f"SSF_RECEIVER_{name}", value)

    def puts() -> list[Any]:
        return [body for method, _, body in transmitter.requests if method == "PUT"]

    result = CliRunner().invoke(app, ["streams", "replace", "--json"])
    assert result.exit_code == 0, result.output
    assert puts()[-1]["delivery"]["authorization_header"] == cred.value
    other = tmp_path / "other.secret"
    load_secret(other, create=True)
    monkeypatch.setenv("SSF_RECEIVER_SECRET_FILE", str(other))
    result = CliRunner().invoke(app, ["streams", "replace"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot be decrypted with this receiver's secret" in result.output
    assert len(puts()) == 1  # nothing sent without the credential
