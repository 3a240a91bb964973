"""Secrets at rest: push authorization headers and private signing keys are Fernet-encrypted
with keys derived from the operator's secret, so a database dump reveals neither.
Built-in access tokens are signed with another key derived from the same secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from transmitter.settings import TransmitterSettings

__all__ = ["SecretBox", "load_master_secret"]


def load_master_secret(settings: TransmitterSettings) -> bytes:
    """The configured secret, else the one in ``secret_file`` (generated on first start)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = Path(settings.secret_file)
    if path.exists():
        return path.read_bytes().strip()
    value = secrets.token_urlsafe(32).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)
    return value


def _derive(master: bytes, label: str) -> bytes:
    return hmac.new(master, label.encode(), hashlib.sha256).digest()


class SecretBox:
    """Encrypt/decrypt small secrets; derive purpose-bound keys from one master secret."""

    def __init__(self, master: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(master, "ssf-transmitter/fernet")))
        self.token_key = _derive(master, "ssf-transmitter/access-token")
        self.client_secret_key = _derive(master, "ssf-transmitter/client-secret")

    def encrypt(self, plain: str) -> bytes:
        return self._fernet.encrypt(plain.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise ValueError("stored secret cannot be decrypted with the configured key") from None

    def hash_client_secret(self, secret: str) -> str:
        return hmac.new(self.client_secret_key, secret.encode(), hashlib.sha256).hexdigest()

    def check_client_secret(self, secret: str, digest: str) -> bool:
        return hmac.compare_digest(self.hash_client_secret(secret), digest)
