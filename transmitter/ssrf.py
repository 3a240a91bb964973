"""SSRF guard for receiver-supplied push URLs.

A push ``endpoint_url`` must be ``https`` and every address its host resolves to must be
public: loopback, private, link-local, carrier-grade NAT, multicast, reserved, unspecified and
cloud metadata addresses are refused unless the operator allowed the host or network
(``allowed_push_destinations``) or runs in development mode. The worker re-checks before
pushing (cached briefly), so a DNS answer that changes later is caught too.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ssf.errors import ModelError
from transmitter.settings import TransmitterSettings

__all__ = ["GuardedResolver", "SSRFGuard"]

_METADATA: Final = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
_CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries: IPv4-mapped, 6to4 (2002::/16), NAT64, Teredo."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _forbidden(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            if reason := _forbidden(embedded):
                return reason
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT):
        return "a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "a reserved address"
    return None


class SSRFGuard:
    def __init__(self, settings: TransmitterSettings) -> None:
        self.dev_mode = settings.dev_mode
        self._hosts: set[str] = set()
        self._nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in settings.allowed_push_destinations:
            try:
                self._nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self._hosts.add(item.lower().rstrip("."))
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def check_url(self, url: str) -> None:
        """Raise :class:`ModelError` (400) when ``url`` may not receive pushes."""
        problem = self._problem(url)
        if problem:
            raise ModelError(f"delivery.endpoint_url {problem}")

    def cached(self, url: str) -> tuple[str | None] | None:
        """A verdict without resolving: ``(problem,)`` if known (or dev mode), else None."""
        if self.dev_mode:
            return (None,)
        hit = self._cache.get(url)
        if hit and hit[0] > time.monotonic():
            return (hit[1],)
        return None

    def allowed(self, url: str) -> str | None:
        """Worker-side re-check, cached for 60 s per URL host; returns the problem or None."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url)
            if hit and hit[0] > now:
                return hit[1]
        problem = self._problem(url)
        with self._lock:
            self._cache[url] = (now + 60, problem)
        return problem

    def _problem(self, url: str) -> str | None:
        try:
            parts = urlsplit(url)
            host = parts.hostname
            port = parts.port
        except ValueError:
            return "is not a valid URL"
        if parts.scheme not in ("https", "http") or not host:
            return "must be an absolute https URL"
        if parts.scheme != "https" and not self.dev_mode:
            return "must use https"
        if parts.username or parts.password:
            return "must not carry credentials"
        if self.dev_mode or host.lower().rstrip(".") in self._hosts:
            return None
        try:
            infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return "does not resolve"
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if any(ip in net for net in self._nets):
                continue
            why = _forbidden(ip)
            if why:
                return f"resolves to {why}, which is not allowed"
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver for the push client: refuses to dial a forbidden address.

    The URL check happens when a stream is configured and before each push (cached); this
    one runs on the very addresses the connection will use, so a host that re-resolves to
    loopback or a private network afterwards (DNS rebinding) is still refused.
    """

    def __init__(self, guard: SSRFGuard, inner: AbstractResolver | None = None) -> None:
        self.guard = guard
        self.inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        if self.guard.dev_mode or host.lower().rstrip(".") in self.guard._hosts:
            return results
        for r in results:
            ip = ipaddress.ip_address(str(r["host"]).split("%", 1)[0])
            if any(ip in net for net in self.guard._nets):
                continue
            why = _forbidden(ip)
            if why:
                raise OSError(f"push to {host} refused: it resolves to {why}")
        return results

    async def close(self) -> None:
        await self.inner.close()
