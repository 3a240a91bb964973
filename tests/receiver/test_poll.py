"""RFC 8936 poll loop: end to end against the fake transmitter, and scripted failure cases."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver.client import TransmitterError
from receiver.core import Receiver
from receiver.poll import MAX_RETRY_AFTER, Poller
from receiver.settings import ReceiverSettings
from receiver.state import is_revoked
from receiver.store import MemoryStore
from ssf.events import SessionRevoked
from ssf.keys import KeySet, PublicKeys, generate_signing_key
from ssf.poll import PollRequest
from ssf.set import SecurityEventToken, sign_set
from ssf.subjects import Subject
from tests.receiver.conftest import Running, run_receiver
from tests.receiver.fake import FakeTransmitter


@pytest.fixture
def polling(fake: FakeTransmitter, tmp_path: Path) -> Iterator[Running]:
    with run_receiver(fake, tmp_path, delivery="poll", poll_max_events=10) as running:
        running.wait(lambda: bool(running.receiver.verified_states), "verification over poll")
        yield running


def test_poll_applies_acks_and_reports_errors(polling: Running) -> None:
    fake, rcv = polling.fake, polling.receiver
    (stream,) = fake.streams.values()
    assert stream["delivery"] == {
        "method": "urn:ietf:rfc:8936",
        "endpoint_url": stream["delivery"]["endpoint_url"],
    }
    good = [fake.sign(Subject.opaque(f"p-{i}"), SessionRevoked(), jti=f"good-{i}") for i in range(25)]
    bad = fake.sign(Subject.opaque("p-bad"), SessionRevoked(), aud="https://other.example", jti="bad-1")
    for t in [*good, bad]:
        fake.enqueue(t)
    polling.wait(lambda: {f"good-{i}" for i in range(25)} <= set(fake.acked), "acks of every good SET")
    polling.wait(lambda: "bad-1" in fake.set_errs, "setErrs for the refused SET")
    assert fake.set_errs["bad-1"]["err"] == "invalid_audience"
    assert all(is_revoked(rcv.state.cutoffs[f"o:p-{i}"]) for i in range(25))
    assert "o:p-bad" not in rcv.state.cutoffs
    # maxEvents honoured, so moreAvailable made the loop ask again at once.
    assert all(b.get("maxEvents") == 10 for b in fake.poll_bodies if b.get("maxEvents") != 0)
    # The endpoint_url query string was kept on every poll.
    assert fake.poll_urls and all("stream_id=" in u for u in fake.poll_urls)
    # Long polling: the receiver did not ask for immediate answers.
    assert all(b.get("returnImmediately") is False for b in fake.poll_bodies)


def test_poll_survives_errors_and_retry_after(polling: Running) -> None:
    fake = polling.fake
    fake.poll_status.extend([(503, {"Retry-After": "0"}), (500, {}), (429, {"Retry-After": "0"})])
    token = fake.sign(Subject.opaque("after-errors"), SessionRevoked(), jti="after-errors")
    fake.enqueue(token)
    polling.wait(lambda: "after-errors" in fake.acked, "ack after transient failures")
    assert not fake.poll_status
    assert polling.receiver.poller is not None and polling.receiver.poller.failures >= 3


# --- scripted client: deterministic failure cases ------------------------------------------
ISS = "https://tx.example"
AUD = "https://rx.example"


class ScriptedClient:
    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.requests: list[PollRequest] = []
        self.urls: list[str] = []

    async def poll(self, url: str, request: PollRequest, *, timeout: float) -> dict[str, Any]:
        self.requests.append(request)
        self.urls.append(url)
        item = self.script.pop(0) if self.script else {"sets": {}}
        if isinstance(item, Exception):
            raise item
        return item


def _receiver(tmp_path: Path) -> tuple[Receiver, Any]:
    settings = ReceiverSettings(database_url="memory", backoff_base=0.01, backoff_max=0.02, poll_interval=0)
    rcv = Receiver(settings, store=MemoryStore())
    key = generate_signing_key("ES256", kid="k")
    rcv.configure(ISS, PublicKeys.from_key_set(KeySet([key])), audience=AUD)
    return rcv, key


def _set(key: Any, jti: str, sid: str = "x") -> str:
    t = SecurityEventToken.create(
        iss=ISS, aud=AUD, sub_id=Subject.opaque(sid), event=SessionRevoked(), jti=jti
    )
    return sign_set(t, key)


async def test_acks_survive_a_failed_request(tmp_path: Path) -> None:
    rcv, key = _receiver(tmp_path)
    client = ScriptedClient(
        [
            {"sets": {"a": _set(key, "a"), "b": "garbage"}, "moreAvailable": True},
            TransmitterError("down", status=503, retry_after=0),
            {"sets": {}},
        ]
    )
    poller = Poller(rcv, client, "https://tx.example/poll?stream_id=s1")  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    for _ in range(200):
        if len(client.requests) >= 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    first, failed, retried = client.requests[:3]
    assert first.ack == [] and failed.ack == ["a"] and retried.ack == ["a"]
    assert retried.set_errs["b"].err == "invalid_request"
    assert set(client.urls) == {"https://tx.example/poll?stream_id=s1"}
    assert is_revoked(rcv.state.cutoffs["o:x"])


async def test_flush_acks_sends_an_acknowledge_only_request(tmp_path: Path) -> None:
    rcv, key = _receiver(tmp_path)
    client = ScriptedClient([{"sets": {"a": _set(key, "a")}}])
    poller = Poller(rcv, client, "https://tx.example/poll")  # type: ignore[arg-type]
    assert await poller.poll_once() == (1, False)
    await poller.flush_acks()
    last = client.requests[-1]
    assert last.max_events == 0 and last.ack == ["a"] and last.return_immediately
    await poller.flush_acks()  # nothing left: no request
    assert len(client.requests) == 2


async def test_mismatched_jti_key_goes_to_set_errs(tmp_path: Path) -> None:
    rcv, key = _receiver(tmp_path)
    acks, errs = await rcv.receive_batch({"other": _set(key, "real")})
    assert acks == [] and errs["other"]["err"] == "invalid_request"


def test_a_long_poll_outlasting_http_timeout_is_not_an_error(
    fake_factory: Callable[..., FakeTransmitter], tmp_path: Path
) -> None:
    """The long poll waits POLL_TIMEOUT (above the transmitter's hold), not HTTP_TIMEOUT."""
    fake = fake_factory(poll_hold=1.0)
    with run_receiver(fake, tmp_path, delivery="poll", http_timeout=0.4, poll_timeout=5) as running:
        running.wait(lambda: bool(running.receiver.verified_states), "verification over poll")
        poller = running.receiver.poller
        assert poller is not None
        held = poller.polls
        running.wait(lambda: poller.polls >= held + 2, "two held polls answered", timeout=10)
        assert poller.failures == 0
        fake.enqueue(fake.sign(Subject.opaque("after-hold"), SessionRevoked(), jti="after-hold"))
        running.wait(lambda: "after-hold" in fake.acked, "the SET delivered by a held poll acked")


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The poll loop's pauses, recorded (and not slept)."""
    waits: list[float] = []

    async def record(stop: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr("receiver.poll._sleep", record)
    return waits


async def _run_script(poller: Poller, client: ScriptedClient, requests: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    for _ in range(500):
        if len(client.requests) >= requests:
            break
        await asyncio.sleep(0)
    stop.set()
    await task


async def test_errors_back_off_exponentially_with_jitter_and_retry_after_wins(
    tmp_path: Path, sleeps: list[float]
) -> None:
    settings = ReceiverSettings(database_url="memory", backoff_base=1.0, backoff_max=8.0, poll_interval=0)
    rcv = Receiver(settings, store=MemoryStore())
    down = [TransmitterError("down", status=503) for _ in range(6)]
    busy = [TransmitterError("busy", status=429, retry_after=s) for s in (30, math.inf, 10.0**9)]
    client = ScriptedClient([*down, *busy, {"sets": {}}])
    poller = Poller(rcv, client, "https://tx.example/poll")  # type: ignore[arg-type]
    await _run_script(poller, client, 10)
    # Each pause lies in [delay/2, delay] for a delay doubling from the base up to the cap.
    for wait, delay in zip(sleeps[:6], [1, 2, 4, 8, 8, 8], strict=True):
        assert delay / 2 <= wait <= delay
    assert len({round(w, 6) for w in sleeps[3:6]}) > 1  # jittered, not one fixed value
    assert sleeps[6] == 30  # the transmitter's Retry-After, not the backoff
    assert sleeps[7:9] == [MAX_RETRY_AFTER, MAX_RETRY_AFTER]  # an absurd one does not stop polling


async def test_more_available_asks_again_at_once_and_an_empty_answer_pauses(
    tmp_path: Path, sleeps: list[float]
) -> None:
    settings = ReceiverSettings(database_url="memory", poll_interval=7.0, poll_return_immediately=True)
    rcv = Receiver(settings, store=MemoryStore())
    key = generate_signing_key("ES256", kid="k")
    rcv.configure(ISS, PublicKeys.from_key_set(KeySet([key])), audience=AUD)
    client = ScriptedClient(
        [
            {"sets": {"m1": _set(key, "m1")}, "moreAvailable": True},
            {"sets": {}, "moreAvailable": True},  # nothing this time, but more to come: no pause
            {"sets": {}},
            {"sets": {}},
        ]
    )
    paused_before: list[int] = []
    scripted_poll = client.poll

    async def poll(url: str, request: PollRequest, *, timeout: float) -> dict[str, Any]:
        paused_before.append(len(sleeps))
        return await scripted_poll(url, request, timeout=timeout)

    client.poll = poll  # type: ignore[method-assign]
    poller = Poller(rcv, client, "https://tx.example/poll")  # type: ignore[arg-type]
    await _run_script(poller, client, 4)
    assert paused_before[:4] == [0, 0, 0, 1]  # the first pause follows the first empty answer
    assert sleeps[0] == 7.0
    assert client.requests[1].ack == ["m1"]
