"""The demo's story: three changes at the identity provider, each refused at the API at once.

For every change the demo signs a user in (a fresh access token), shows the API allowing it,
makes the change at the identity provider (which publishes a CAEP event through the SSF
transmitter), then calls the API again and again until it refuses, and records how long that
took. Nothing is simulated: a refusal that does not come within the timeout is a failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import statistics
import tempfile
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Final

import httpx
from rich.console import Console
from rich.json import JSON
from rich.markup import escape

from demo.api import ALLOWED, INVALID_TOKEN, STEP_UP, call, wait_until
from demo.scenarios import SCENARIOS, USER, Scenario, event_name
from demo.stack import API_AUDIENCE, LONG_POLL_SECONDS, Api, Stack
from demo.timeline import Outcome, Timeline
from ssf.errors import SSFError
from ssf.set import decode_unverified

__all__ = ["DemoFailed", "main"]

#: How long an API may take to refuse after the change before the demo calls it a failure.
REFUSAL_TIMEOUT: Final = 10.0
log = logging.getLogger("demo")


class DemoFailed(RuntimeError):
    """Something the demo relies on did not happen; the message says what."""


class Demo:
    def __init__(self, console: Console, stack: Stack, *, refusal_timeout: float = REFUSAL_TIMEOUT) -> None:
        self.console = console
        self.stack = stack
        self.timeline = Timeline(console)
        self.refusal_timeout = refusal_timeout
        self._explained = False
        self._shown_set = False

    # -- set-up ------------------------------------------------------------------------------

    def start(self) -> None:
        t, s = self.timeline, self.stack
        t.section(
            "Setting up",
            "Real services on their own loopback ports, talking HTTP; state lives in SQLite files "
            "in a temporary directory.",
        )
        made = s.register_clients()
        clients = ", ".join(f"[bold]{name}[/] ({' '.join(scopes)})" for name, (_, scopes) in made.items())
        t.log(
            "transmitter", f"registered OAuth clients, as [dim]ssf transmitter client add[/] does: {clients}"
        )
        tx, idp = s.start_transmitter_and_idp()
        t.log("transmitter", f"SSF transmitter running at {tx.url} (SQLite, signing key generated)")
        t.log(
            "IdP",
            f"identity provider running at {idp.url}: signs users' access tokens (RFC 9068) for "
            f"{API_AUDIENCE}, publishes changes to the transmitter as client demo-idp",
        )
        health = s.start_apis()
        for api in s.apis:
            stream = s.fetch_stream(api)
            delivery = stream.get("delivery")
            endpoint = delivery.get("endpoint_url") if isinstance(delivery, dict) else None
            t.log(
                api.name,
                f"API running at {api.url}; on start its SSF receiver created stream "
                f"[bold]{stream['stream_id']}[/] ({api.delivery}: {endpoint}), "
                f"status {stream.get('status')}, "
                f"and the transmitter's verification SET came back with the right state: "
                f"verified={health[api.name]['verified']}",
            )

    # -- the story ---------------------------------------------------------------------------

    async def play(self) -> None:
        # Loopback only: never through a proxy from the environment.
        async with httpx.AsyncClient(timeout=LONG_POLL_SECONDS + 10, trust_env=False) as http:
            for scenario in SCENARIOS:
                await self._scenario(http, scenario)

    async def _scenario(self, http: httpx.AsyncClient, sc: Scenario) -> None:
        t, idp_url = self.timeline, self.stack.idp_url
        t.section(sc.title, sc.explanation)
        login = await http.post(
            f"{idp_url}/login", json={"username": USER, "device_id": sc.device_id, "acr": sc.acr}
        )
        if login.status_code != 200:
            raise DemoFailed(f"sign-in at the identity provider failed: {login.status_code} {login.text}")
        token, sid = login.json()["access_token"], login.json()["sid"]
        _, claims = decode_unverified(token)  # a JWT too; shown for reading, the API verifies it
        minutes = (int(claims["exp"]) - int(claims["iat"])) // 60
        t.log(
            "IdP",
            f"Ada signs in on {sc.device_id} at {sc.acr}: session {sid}. Her access token (RFC 9068 JWT) "
            f"says sub={claims['sub']}, sid={claims['sid']}, acr={claims['acr']}, "
            f"device_id={claims['device_id']}, valid {minutes} min",
        )
        for api in self.stack.apis:
            answer = await call(http, api.protected_url, token)
            t.log(api.name, "GET /protected/whoami with Ada's token → [green bold]200 OK[/]: allowed")
            if answer.kind != ALLOWED:
                raise DemoFailed(f"{api.name} refused a fresh token before any change: {answer.describe()}")

        labels = sc.label.split("|")
        path, body = sc.route(sid)
        await self._change(http, sc, labels[0], sc.action.format(sid=sid), path, body, token, sc.expected)
        if sc.undo is not None:
            text, route = sc.undo
            path, body = route(sid)
            await self._change(http, sc, labels[-1], text, path, body, token, ALLOWED)

    async def _change(
        self,
        http: httpx.AsyncClient,
        sc: Scenario,
        label: str,
        text: str,
        path: str,
        body: dict[str, Any],
        token: str,
        expected: str,
    ) -> None:
        t = self.timeline
        resp = await http.post(f"{self.stack.idp_url}{path}", json=body)
        seen = t.elapsed()
        if resp.status_code != 200:
            raise DemoFailed(f"the identity provider could not publish: {resp.status_code} {resp.text}")
        published = resp.json()
        # Watch first, print afterwards: rendering the timeline blocks this event loop, and
        # must not be counted in the time the APIs take to hear of the change.
        waits: list[Awaitable[Any]] = [
            wait_until(
                http,
                api.protected_url,
                token,
                since=float(published["published_at"]),
                allowed=expected == ALLOWED,
                timeout=self.refusal_timeout,
            )
            for api in self.stack.apis
        ]
        results = await asyncio.gather(*waits)
        if published["jti"]:
            count = len(published["jti"])
            routed = f"and signed one SET for each of the {count} stream(s) that asked for it"
        else:
            routed = "[red]no stream asked for this event, so no SET was made[/]"
        t.log(
            "IdP",
            f"{text} → publishes CAEP [bold]{event_name(sc.event_type)}[/]; the transmitter stored it "
            f"durably in {published['publish_ms']:.1f} ms {routed}",
            at=seen,
        )
        if not self._explained:
            self._explained = True
            t.note(
                "Meanwhile the transmitter POSTs the SET to the push API's /ssf/push and hands it to "
                "the poll API's waiting long poll. Each receiver checks its signature against the "
                "transmitter's JWKS, its issuer, audience and jti, then applies it to its revocation "
                "state. The demo calls each API every 5 ms until the answer changes."
            )
        publish_ms = float(published["publish_ms"])
        # The timeline in the order the answers came (a missing one last); the table in API order.
        order = sorted(
            range(len(results)), key=lambda i: results[i].at if results[i] is not None else float("inf")
        )
        outcomes = {
            i: self._record(sc, self.stack.apis[i], label, expected, results[i], publish_ms) for i in order
        }
        self.timeline.outcomes.extend(outcomes[i] for i in range(len(results)))
        if not self._shown_set:
            self._shown_set = self._show_set(published["jti"])

    def _show_set(self, jtis: dict[str, str]) -> bool:
        """Print, once, a SET exactly as it reached a push endpoint (decoded for reading)."""
        for api in self.stack.apis:
            stream_id = api.stream.get("stream_id")
            jti = jtis.get(str(stream_id))
            if api.tap is None or jti is None:
                continue
            for body in api.tap.bodies():
                try:
                    header, claims = decode_unverified(body)
                except SSFError:
                    continue
                if claims.get("jti") == jti:
                    self.console.print(
                        f"[bold]The SET as it reached {api.name}'s /ssf/push[/] ({len(body)} bytes; "
                        "header and claims decoded):"
                    )
                    # soft_wrap: long event-type URIs run past the edge rather than being cut.
                    self.console.print(JSON(json.dumps({"header": header, "claims": claims})), soft_wrap=True)
                    self.timeline.note(
                        "A signed JWT (RFC 8417): who sent it (iss), for which stream (aud), about whom "
                        "(sub_id: Ada and her session) and what happened (events). The receiver "
                        f"checked its signature with the transmitter's key {escape(str(header.get('kid')))} "
                        "from the transmitter's JWKS before acting on it."
                    )
                    return True
        return False

    def _record(
        self, sc: Scenario, api: Api, label: str, expected: str, result: Any, publish_ms: float
    ) -> Outcome:
        """Print one API's answer to the change on the timeline; the outcome for the table."""
        t = self.timeline
        event = event_name(sc.event_type)
        if result is None:
            what = "still allowed" if expected != ALLOWED else "still refused"
            t.log(api.name, f"[red bold]{what} after {self.refusal_timeout:g} s: expected {expected}[/]")
            return Outcome(label, event, api.name, expected, what, None, 0, publish_ms)
        answer = result.answer
        ms = result.after * 1000
        why = answer.challenge.get("error_description")
        reason = f' ("{escape(why)}")' if why else ""
        timing = f"[bold]{ms:.1f} ms[/] after the publish call returned"
        if result.allowed_before:
            timing += f" ({result.allowed_before} call(s) before it still got the old answer)"
        if answer.kind == ALLOWED:
            text = f"[green bold]200 OK[/]: allowed again, {timing}"
        elif answer.kind == INVALID_TOKEN:
            text = (
                f"[red bold]401 invalid_token[/]{reason}: refused {timing}, though the token is "
                "unexpired and correctly signed"
            )
        elif answer.kind == STEP_UP:
            acr = answer.challenge.get("acr_values", "?")
            text = (
                f"[yellow bold]401 insufficient_user_authentication, acr_values={escape(acr)}[/]{reason}: "
                f"a step-up challenge (RFC 9470), {timing}; Ada must sign in again at {escape(acr)}"
            )
        else:
            text = f"[red bold]{escape(answer.describe())}[/] {timing}"
        t.log(api.name, f"GET /protected/whoami → {text}", at=result.at - t.started)
        return Outcome(label, event, api.name, expected, answer.kind, ms, result.allowed_before, publish_ms)


def _conclusion(console: Console, timeline: Timeline) -> bool:
    console.print()
    console.print(timeline.summary())
    failed = [o for o in timeline.outcomes if not o.ok]
    if failed:
        for o in failed:
            console.print(f"[red bold]FAILED[/] {o.api}, {o.scenario}: expected {o.expected}, got {o.got}")
        return False
    times = sorted(o.latency_ms for o in timeline.outcomes if o.latency_ms is not None)
    apis = sorted({o.api for o in timeline.outcomes})
    reached = "both APIs, by push and by poll," if len(apis) == 2 else f"the {apis[0]}"
    console.print(
        "\n[bold]That is continuous authorization.[/] Every token above was correctly signed and had "
        "almost an hour to live, so a classic API would have kept accepting it. Here each change at "
        f"the identity provider reached {reached} {times[0]:.0f}–{times[-1]:.0f} ms "
        f"after the publish call returned (median {statistics.median(times):.0f} ms), and the next "
        "request was judged against the new truth: refused, or asked to step up, and let in again "
        "once the device or the sign-in was fixed."
    )
    return True


def _serve_forever(console: Console, stack: Stack) -> None:
    console.print()
    console.rule("[bold]Services are running (Ctrl-C to stop)")
    console.print(f"identity provider  {stack.idp_url}   (POST /login, /admin/…, GET /jwks.json)")
    console.print(f"SSF transmitter    {stack.transmitter_url}   (/.well-known/ssf-configuration)")
    for api in stack.apis:
        console.print(f"{api.name:<18} {api.url}   (GET {api.protected_url})")
    console.print(f"admin console      {stack.transmitter_url}/admin   (sign in with a bearer token, below)")
    metrics = ", ".join(f"{url}/metrics" for url in (stack.transmitter_url, *(a.url for a in stack.apis)))
    console.print(f"metrics            {metrics}", highlight=False, soft_wrap=True)
    console.print(f"log                {stack.workdir / 'demo.log'} (removed on exit)")
    api = stack.apis[0]
    console.print(
        f"\nA management token for {api.client_name} (for the admin console or the /ssf API), valid 1 hour:\n"
        f"  curl -s -X POST {stack.transmitter_url}/oauth/token -u '{api.client_id}:{api.client_secret}' "
        "-d grant_type=client_credentials",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        "\nTry it:\n"
        f"  TOKEN=$(curl -s -X POST {stack.idp_url}/login -H 'content-type: application/json' "
        f"""-d '{{"username":"grace","device_id":"tablet-1"}}' | python3 -c 'import json,sys; """
        """print(json.load(sys.stdin)["access_token"])')\n"""
        f'  curl -i {stack.apis[0].protected_url} -H "Authorization: Bearer $TOKEN"\n'
        f"  curl -X POST {stack.idp_url}/admin/users/grace/assurance -H 'content-type: application/json' "
        """-d '{"level":"nist-aal1"}'""",
        highlight=False,
        soft_wrap=True,
    )
    console.print("SERVING", highlight=False)
    stop = threading.Event()
    # Ctrl-C and SIGTERM both just ask to stop; a second Ctrl-C during shutdown changes nothing.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    console.print("stopping…")


def main(
    deliveries: tuple[str, ...] = ("push", "poll"),
    *,
    serve: bool = False,
    console: Console | None = None,
    refusal_timeout: float = REFUSAL_TIMEOUT,
) -> int:
    """Run the demo; 0 when every expected refusal happened, 1 otherwise."""
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="ssf-demo-") as tmp:
        workdir = Path(tmp)
        handler = _log_to(workdir / "demo.log")
        stack = Stack(workdir, deliveries)
        demo = Demo(console, stack, refusal_timeout=refusal_timeout)
        demo.timeline.intro()
        ok = False
        try:
            demo.start()
            asyncio.run(demo.play())
            ok = _conclusion(console, demo.timeline)
            if serve:
                _serve_forever(console, stack)
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted[/]")
        except DemoFailed as exc:
            console.print(f"\n[red bold]The demo failed:[/] {escape(str(exc))}")
        except Exception as exc:
            log.exception("demo crashed")
            console.print(f"\n[red bold]The demo failed:[/] {escape(type(exc).__name__)}: {escape(str(exc))}")
        finally:
            previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            hung = stack.stop()
            for sig, handler_ in previous.items():
                signal.signal(sig, handler_)
            if hung:
                console.print(f"[yellow]did not stop cleanly: {', '.join(hung)}[/]")
            if not ok:
                _tail_log(console, workdir / "demo.log")
            logging.getLogger().removeHandler(handler)
            handler.close()
        console.print("\nAll services stopped." if not hung else "")
    return 0 if ok and not hung else 1


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _tail_log(console: Console, path: Path, lines: int = 30) -> None:
    try:
        text = path.read_text().splitlines()[-lines:]
    except OSError:
        return
    if text:
        console.print("[dim]last lines of the services' log:[/]")
        for line in text:
            console.print(f"[dim]{escape(line)}[/]", highlight=False)
