"""A minimal loopback push sink for the transmitter benchmark: answers 202, records arrivals.

``python -m bench.transmitter_sink PORT`` — POST /push records ``{jti: arrival time}``;
GET /stats returns ``{"count": n, "arrivals": {...}}``; POST /reset clears.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Any

import uvicorn

arrivals: dict[str, float] = {}
count = 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global count
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    path = scope["path"]
    if path == "/push":
        now = time.time()
        count += 1
        try:
            seg = body.split(b".")[1]
            jti = json.loads(base64.urlsafe_b64decode(seg + b"=" * (-len(seg) % 4)))["jti"]
            arrivals.setdefault(jti, now)
        except (IndexError, ValueError, KeyError):
            pass
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/reset":
        arrivals.clear()
        count = 0
        out = b"{}"
    else:
        out = json.dumps({"count": count, "arrivals": arrivals}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
