"""TLS in front of the emulated transmitter, with certificates a receiver must refuse.

Certificates are made at run time (never stored): a throwaway CA, a self-signed certificate
for 127.0.0.1, and CA-signed ones for 127.0.0.1 and for a host name that is not the one the
receiver connects to. The front is a TLS-terminating relay to the plain emulator so that
the kit sees every connection attempt, whether its handshake completed, and (through the
emulator) every HTTP request that followed: a receiver that refuses the certificate
connects but never completes a handshake, and never sends a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Certificates", "TLSFront", "make_certificates", "tls_front"]

#: The host name of the wrong-host certificate: reserved (RFC 2606), never the one dialled.
WRONG_HOST = "not-the-transmitter.invalid"


@dataclass(frozen=True, slots=True)
class Pair:
    cert: bytes
    key: bytes


@dataclass(frozen=True, slots=True)
class Certificates:
    ca: bytes
    self_signed: Pair
    trusted: Pair
    wrong_host: Pair


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _leaf(
    subject: str,
    san: x509.GeneralName,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey | None,
) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer or key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def make_certificates(host: str = "127.0.0.1") -> Certificates:
    """A throwaway CA and three server certificates for ``host`` (an IP address or a name)."""
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ssf conformance kit throwaway CA")
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Certificates(
        ca=ca.public_bytes(serialization.Encoding.PEM),
        self_signed=_leaf(host, san, None, None),
        trusted=_leaf(host, san, ca_name, ca_key),
        wrong_host=_leaf(WRONG_HOST, x509.DNSName(WRONG_HOST), ca_name, ca_key),
    )


def server_context(pair: Pair) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory() as d:  # ssl loads chains from files only
        cert, key = Path(d) / "cert.pem", Path(d) / "key.pem"
        cert.write_bytes(pair.cert)
        key.write_bytes(pair.key)
        ctx.load_cert_chain(cert, key)
    return ctx


@dataclass(slots=True)
class TLSFront:
    """What the front saw: connections, completed handshakes, and handshake failures."""

    url: str = ""
    connections: int = 0
    handshakes: int = 0
    failures: list[str] = field(default_factory=list)

    def describe(self) -> str:
        why = f" ({self.failures[0]})" if self.failures else ""
        return f"{self.connections} connection(s), {self.handshakes} completed handshake(s){why}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()


@contextlib.asynccontextmanager
async def tls_front(
    pair: Pair, backend: str, host: str = "127.0.0.1", handshake_timeout: float = 10.0
) -> AsyncIterator[TLSFront]:
    """Listen with TLS on ``host`` (a free port) and relay to ``backend`` (``host:port``)."""
    ctx = server_context(pair)
    front = TLSFront()
    b_host, _, b_port = backend.rpartition(":")
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        front.connections += 1
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            reason = str(getattr(exc, "reason", None) or exc)
            front.failures.append(type(exc).__name__ + (f": {reason}" if reason else ""))
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                writer.close()
            return
        front.handshakes += 1
        try:
            up_r, up_w = await asyncio.open_connection(b_host.strip("[]"), int(b_port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))

    def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(spawn, host, 0)
    port = server.sockets[0].getsockname()[1]
    front.url = f"https://{f'[{host}]' if ':' in host else host}:{port}"
    try:
        yield front
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        for t in list(tasks):
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
