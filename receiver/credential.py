"""The push credential at rest: a dump of the store shows neither it nor anything that replays it.

When no ``PUSH_AUTHORIZATION`` is configured the receiver generates the ``Authorization``
value the transmitter must send with each push (RFC 8935 §2) and keeps it in the stored
stream record, so a restart or another instance sharing the store accepts what the
transmitter already sends. The record holds:

- its SHA-256 digest: enough to check a push (digests are compared in constant time, and
  a fixed length leaks nothing about the value's length); the value has 256 random bits,
  so the digest cannot be inverted;
- the value itself, Fernet-encrypted with a key derived from a secret the receiver keeps
  outside the store (``SECRET_KEY``, else ``SECRET_FILE``): needed only to send it to the
  transmitter again (stream create or update). An instance holding another key still
  accepts pushes by the digest and only replaces the credential if it must re-send it.

A record written before this (the value in clear) still loads and is rewritten.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken

if TYPE_CHECKING:
    from receiver.settings import ReceiverSettings

__all__ = [
    "CredentialBox",
    "PushCredential",
    "SecretUnavailable",
    "load_secret",
    "make_box",
    "secret_path",
]

#: Members of the stored record's ``_receiver`` object.
DIGEST = "push_authorization_sha256"
ENCRYPTED = "push_authorization_encrypted"
KEY_ID = "key_id"
#: The previous version's member: the credential in clear (read once, then rewritten).
LEGACY = "push_authorization"


class SecretUnavailable(OSError):
    """The secret file can be neither read nor created: says what to set instead."""


def secret_path(secret_file: Path | None, database_url: str) -> Path:
    """Where the generated secret lives: the configured file, else beside a SQLite
    database file, else ``ssf-receiver.secret`` in the working directory."""
    if secret_file is not None:
        return secret_file
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if database_url.startswith(prefix):
            db = database_url[len(prefix) :].split("?", 1)[0]
            if db and db != ":memory:":
                return Path(db + ".secret")
    return Path("ssf-receiver.secret")


def load_secret(path: Path, *, create: bool) -> bytes | None:
    """The secret in ``path``; with ``create``, a new one written there (mode 0600) if absent."""
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            return None
    else:
        if not value:
            raise ValueError(f"the secret file {path} is empty")
        return value
    value = secrets.token_urlsafe(32).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: another instance never
    # reads a created-but-empty file, and a crash never leaves one behind.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:  # another instance made it meanwhile: use that one
        return path.read_bytes().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return value


def make_box(settings: ReceiverSettings, *, create: bool) -> CredentialBox | None:
    """The box for the configured secret (``SECRET_KEY``, else the secret file); None when
    there is no file and ``create`` is false."""
    if settings.secret_key is not None:
        return CredentialBox(settings.secret_key.get_secret_value().encode())
    db = "" if settings.redis_url else settings.database_url
    path = secret_path(settings.secret_file, db)
    try:
        master = load_secret(path, create=create)
    except OSError as exc:
        where = "" if settings.secret_file is not None else " (the default place)"
        raise SecretUnavailable(
            f"cannot {'create' if create else 'read'} the receiver's secret file {path}{where}: "
            f"{exc.strerror or exc}; set SSF_RECEIVER_SECRET_KEY, or SSF_RECEIVER_SECRET_FILE to "
            "a writable path"
        ) from exc
    return None if master is None else CredentialBox(master)


def _derive(master: bytes, label: str) -> bytes:
    return hmac.new(master, label.encode(), hashlib.sha256).digest()


class CredentialBox:
    """Encrypts the credential with a key derived from the receiver's secret."""

    def __init__(self, master: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(master, "ssf-receiver/push-credential")))
        #: Names the key without revealing it: says in a log which key wrote a record.
        self.key_id = _derive(master, "ssf-receiver/key-id")[:6].hex()

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str | None:
        """The value, or None when another key encrypted it (or the token is damaged)."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError, ValueError):
            return None


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@dataclass(slots=True)
class PushCredential:
    """The ``Authorization`` value pushes must carry: always its digest, the value when known."""

    digest: bytes
    value: str | None = None

    @classmethod
    def of(cls, value: str) -> PushCredential:
        return cls(_digest(value.encode()), value)

    @classmethod
    def generate(cls) -> PushCredential:
        return cls.of("Bearer " + secrets.token_urlsafe(32))

    def matches(self, got: bytes) -> bool:
        """Constant time: the digests of the sent and the expected value."""
        return hmac.compare_digest(_digest(got), self.digest)

    def to_record(self, box: CredentialBox) -> dict[str, str]:
        """The stored form (``value`` must be known: only its holder writes the record)."""
        assert self.value is not None
        return {DIGEST: self.digest.hex(), ENCRYPTED: box.encrypt(self.value), KEY_ID: box.key_id}

    @classmethod
    def from_record(cls, own: object, box: CredentialBox | None) -> tuple[PushCredential | None, bool]:
        """(credential, stored in clear) from the record's ``_receiver`` object.

        The value is decrypted when ``box`` holds the right key; else only the digest is
        known. ``None`` when the record holds no credential (or a malformed one).
        """
        if not isinstance(own, Mapping):
            return None, False
        legacy = own.get(LEGACY)
        if isinstance(legacy, str) and legacy:
            return cls.of(legacy), True
        return cls._parse(own, box), False

    @classmethod
    def _parse(cls, own: Mapping[str, Any], box: CredentialBox | None) -> PushCredential | None:
        hexdigest, token = own.get(DIGEST), own.get(ENCRYPTED)
        if not isinstance(hexdigest, str):
            return None
        try:
            digest = bytes.fromhex(hexdigest)
        except ValueError:
            return None
        if len(digest) != 32:
            return None
        value = box.decrypt(token) if box is not None and isinstance(token, str) else None
        if value is not None and _digest(value.encode()) != digest:
            value = None  # a value that does not match its digest is not ours to send
        return cls(digest, value)
