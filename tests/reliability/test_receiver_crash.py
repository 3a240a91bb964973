"""A receiver process that crashes between applying a SET and acknowledging it: the
transmitter re-delivers, and the re-delivered SET changes nothing.

The transmitter pushes through a proxy that forwards each push but resets the connection as
soon as the receiver answers (the receiver applied and stored the SET; the transmitter never
heard the 202). The receiver is then SIGKILLed and restarted on the same database; the
transmitter's retry is recognised by its ``jti`` and answered 202 with no state change.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

from tests.reliability.support import SSF, TcpProxy, tx_cluster, wait_until
from tests.support.services import free_port, require_postgres

PUSH_AUTH = "Bearer crash-test-secret-0123456789"


def _start_receiver(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [SSF, "receiver", "serve", "--port", str(port), "--no-demo"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            return bool(httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json().get("ready"))
        except (httpx.HTTPError, ValueError):
            return False

    wait_until(ready, timeout=120, interval=0.1, what="receiver ready")
    return proc


def _health(port: int) -> dict[str, Any]:
    return dict(httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json())


def test_crash_between_apply_and_ack_then_redelivery_changes_nothing(tmp_path: Path) -> None:
    url = require_postgres()
    rport = free_port()
    with tx_cluster(url, tmp_path, 1) as cluster, TcpProxy(rport) as proxy, httpx.Client(timeout=10) as http:
        cluster.start_all()
        env = {
            **os.environ,
            "SSF_RECEIVER_TRANSMITTER_ISSUER": cluster.issuer,
            "SSF_RECEIVER_DEV_MODE": "1",
            "SSF_RECEIVER_OUT_OF_BAND": "1",
            "SSF_RECEIVER_DELIVERY": "push",
            "SSF_RECEIVER_PUSH_AUTHORIZATION": PUSH_AUTH,
            "SSF_RECEIVER_AUDIENCE": cluster.audience,
            "SSF_RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'receiver.db'}",
        }
        proc = _start_receiver(env, rport, tmp_path / "rx.log")
        try:
            proxy.set_mode("swallow")
            sid = cluster.create_push_stream(
                http, f"http://127.0.0.1:{proxy.port}/ssf/push", authorization_header=PUSH_AUTH
            )
            r = cluster.publish(http, 0, "crash@example.com")
            assert r.status_code == 202
            wait_until(lambda: proxy.swallowed >= 1, what="a push answered but not acknowledged")
            wait_until(lambda: _health(rport)["stats"].get("accepted") == 1, what="applied once")
            before = _health(rport)["state"]
            assert sum(before.values()) >= 1  # the SET changed the state

            proc.send_signal(signal.SIGKILL)  # crash: the transmitter never got its 202
            proc.wait(10)
            proc = _start_receiver(env, rport, tmp_path / "rx.log")
            assert _health(rport)["state"] == before  # the applied SET survived the crash
            proxy.set_mode("pass")

            def redelivered() -> bool:
                return bool(_health(rport)["stats"].get("duplicate", 0) >= 1)

            wait_until(redelivered, timeout=20, what="the transmitter re-delivered the SET")
            after = _health(rport)
            assert after["stats"].get("accepted", 0) == 0  # nothing applied again
            assert after["state"] == before
            # and the transmitter now records it delivered
            engine = sqlalchemy.create_engine(url)
            try:

                def states() -> list[str]:
                    with engine.connect() as conn:
                        q = f'SELECT state FROM "{cluster.schema}".ssf_outbox WHERE stream_id = :s'
                        return [r[0] for r in conn.execute(sqlalchemy.text(q), {"s": sid})]

                wait_until(lambda: states() == ["delivered"], what="outbox row delivered")
            finally:
                engine.dispose()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
