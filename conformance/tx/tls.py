"""TLS of the transmitter's host (CAEPIOP 2.1, SSF 10.4, RFC 9325), like the suite's TLS
condition sequence: TLS 1.2 or later is served, TLS 1.0/1.1 are refused, TLS 1.3 offered.

Probes are bare handshakes (certificate trust is not judged here: the HTTP checks use a
verifying client). Legacy protocols are offered on purpose, with OpenSSL's security level
lowered for the probe only.
"""

from __future__ import annotations

import asyncio
import ssl
import warnings
from urllib.parse import urlsplit

from conformance.registry import ModuleRun, Severity, SkipModule, check, module
from conformance.tx.context import TransmitterKit

F, W = Severity.FAILURE, Severity.WARNING

TLS_MODERN = check("tls.modern", "CAEPIOP 2.1 / SSF 10.4", F, "a TLS 1.2 or 1.3 handshake succeeds")
TLS_NO_LEGACY = check("tls.no-legacy", "CAEPIOP 2.1 / RFC 8996", W, "TLS 1.0 and 1.1 are refused", caep=F)
TLS_13 = check("tls.13-offered", "CAEPIOP 2.1 / RFC 9325 3.1.1", W, "TLS 1.3 is offered")

#: Client-side errors that mean "this OpenSSL cannot offer the protocol": no verdict then.
_CANNOT_OFFER = ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE")


async def handshake(
    host: str, port: int, low: ssl.TLSVersion, high: ssl.TLSVersion, timeout: float
) -> tuple[str | None, str]:
    """(negotiated version or None, error reason)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are probed on purpose
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = low
        ctx.maximum_version = high
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    except ssl.SSLError as exc:
        return None, str(exc.reason or exc)
    except (OSError, TimeoutError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    obj = writer.get_extra_info("ssl_object")
    version = obj.version() if obj is not None else None
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass
    return version, ""


@module(
    "kit-transmitter-tls",
    "transmitter",
    "TLS versions offered by the transmitter's host (the suite's TLS condition sequence)",
    (TLS_MODERN, TLS_NO_LEGACY, TLS_13),
    origin="kit",
)
async def tls_module(kit: TransmitterKit, run: ModuleRun) -> None:
    url = kit.opts.issuer or kit.opts.metadata_url or ""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise SkipModule("the transmitter is not served over https")
    host, port, t = parts.hostname, parts.port or 443, kit.opts.http_timeout
    tv = ssl.TLSVersion
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy_low, legacy_high = tv.TLSv1, tv.TLSv1_1
    version, why = await handshake(host, port, tv.TLSv1_2, tv.TLSv1_3, t)
    run.expect(TLS_MODERN, version is not None, f"TLS 1.2/1.3 handshake failed: {why}", str(version))
    old, why = await handshake(host, port, legacy_low, legacy_high, t)
    if old is None and any(code in why for code in _CANNOT_OFFER):
        run.skip(TLS_NO_LEGACY, f"this OpenSSL cannot offer TLS 1.0/1.1 ({why})")
    else:
        run.expect(TLS_NO_LEGACY, old is None, f"a {old} handshake succeeded", f"refused ({why})")
    v13, why = await handshake(host, port, tv.TLSv1_3, tv.TLSv1_3, t)
    run.expect(TLS_13, v13 == "TLSv1.3", f"no TLS 1.3 ({why})", "TLS 1.3")
