"""Signing keys in the database (private parts encrypted), rotation with overlap.

SETs are signed with the newest active key; retired keys stay in the JWKS for
``key_overlap_seconds``, and longer while a SET they signed is still waiting in the outbox (a
paused stream, or a poll receiver that has not acknowledged it), so every SET keeps verifying.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ssf.errors import KeyMaterialError
from ssf.keys import KeySet, SigningKey, generate_signing_key, load_signing_key
from transmitter.db import PENDING, begin, key_t, outbox_t, stream_t
from transmitter.secrets_box import SecretBox
from transmitter.settings import TransmitterSettings

__all__ = ["KeyStore"]

log = logging.getLogger("transmitter.keystore")

_ROTATION_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('ssf_key_rotation'))")


class KeyStore:
    def __init__(self, engine: Engine, box: SecretBox, settings: TransmitterSettings) -> None:
        self._engine = engine
        self._box = box
        self._settings = settings
        self._lock = threading.Lock()
        self._keys = KeySet([])
        self._jwks: dict[str, Any] = {"keys": []}

    def ensure(self) -> None:
        """First start: import the configured key file, or generate a key, if none is stored.
        Later starts keep the stored keys; a key file whose key is not among them is ignored,
        which is said once, loudly, rather than left for the operator to discover."""
        with begin(self._engine) as conn:
            kids = {r.kid for r in conn.execute(select(key_t.c.kid))}
            file_key = None
            try:
                file_key = self._file_key()
            except (OSError, ValueError, KeyMaterialError) as exc:
                if not kids:
                    raise  # the first start needs it
                log.warning("SSF_TRANSMITTER_SIGNING_KEY_FILE is ignored (unreadable: %s)", exc)
            if not kids:
                key = file_key or generate_signing_key(
                    self._settings.signing_alg, created_at=int(time.time())
                )
                conn.execute(key_t.insert().values(**self._row(key)))
            elif file_key is not None and file_key.kid not in kids:
                log.warning(
                    "SSF_TRANSMITTER_SIGNING_KEY_FILE %s is ignored: its key %s is not among the "
                    "%d signing keys the database already holds, and the file is read on the first "
                    "start only. To sign with it, run `ssf transmitter keys import %s` (the current "
                    "key stays in the JWKS for the overlap), or unset the variable.",
                    self._settings.signing_key_file,
                    file_key.kid,
                    len(kids),
                    self._settings.signing_key_file,
                )
        self.reload()

    def _file_key(self) -> SigningKey | None:
        path = self._settings.signing_key_file
        return None if path is None else read_key_file(path)

    def import_key(self, key: SigningKey) -> bool:
        """Make ``key`` the active signing key, retiring the current one as a rotation does;
        False (and nothing changed) when a key with its kid is already stored."""
        now = int(time.time())
        new = SigningKey(key.kid, key.alg, key.key, now)
        with begin(self._engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(_ROTATION_LOCK)
            if conn.execute(select(key_t.c.kid).where(key_t.c.kid == key.kid)).first() is not None:
                return False
            self._replace(conn, new, now)
        self.reload()
        return True

    def _row(self, key: SigningKey) -> dict[str, Any]:
        return {
            "kid": key.kid,
            "alg": key.alg,
            "private_enc": self._box.encrypt(json.dumps(key.private_jwk())),
            "created_at": key.created_at,
            "retired_at": key.retired_at,
        }

    def reload(self) -> None:
        with begin(self._engine) as conn:
            rows = conn.execute(select(key_t).order_by(key_t.c.created_at, key_t.c.kid)).all()
        keys = []
        for row in rows:
            key = load_signing_key(self._box.decrypt(row.private_enc))
            keys.append(SigningKey(row.kid, row.alg, key.key, row.created_at, row.retired_at))
        ks = KeySet(keys)
        with self._lock:
            self._keys = ks
            self._jwks = ks.jwks()

    @property
    def active(self) -> SigningKey:
        with self._lock:
            return self._keys.active

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return self._jwks

    def current_jwks(self) -> dict[str, Any]:
        """The JWKS as the database holds it now (the served one): another instance on the
        same database may have rotated and be signing with its new key already, which this
        one would otherwise publish only at its next reload. One read of the kids; the keys
        are loaded again only when those differ. With the database unreachable, the keys
        loaded last (verifying SETs needs no database)."""
        try:
            with begin(self._engine) as conn:
                rows = conn.execute(select(key_t.c.kid, key_t.c.retired_at)).all()
            stored = {(r.kid, r.retired_at) for r in rows}
            with self._lock:
                loaded = {(k.kid, k.retired_at) for k in self._keys.keys}
            if stored != loaded:
                self.reload()
        except SQLAlchemyError:
            pass
        return self.jwks()

    def all(self) -> list[SigningKey]:
        with self._lock:
            return list(self._keys.keys)

    def rotate(self, alg: str | None = None) -> SigningKey:
        """Add a new active key; the previous one is retired but stays published."""
        now = int(time.time())
        new = generate_signing_key(alg or self._settings.signing_alg, created_at=now)
        with begin(self._engine) as conn:
            self._replace(conn, new, now)
        self.prune()
        return new

    def rotate_due(self, interval: float) -> SigningKey | None:
        """The scheduled rotation: rotate unless a key was made within (nearly) ``interval``
        seconds, by this instance or another on the same database, so that several instances
        each running the schedule still rotate once per interval."""
        new = generate_signing_key(self._settings.signing_alg, created_at=int(time.time()))
        with begin(self._engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(_ROTATION_LOCK)  # the next instance's check sees this one's key
            newest = conn.execute(select(func.max(key_t.c.created_at))).scalar()
            if newest is not None and time.time() - newest < 0.9 * interval:
                return None
            self._replace(conn, new, new.created_at or int(time.time()))
        self.prune()
        return new

    def _replace(self, conn: Any, new: SigningKey, now: int) -> None:
        conn.execute(update(key_t).where(key_t.c.retired_at.is_(None)).values(retired_at=now))
        conn.execute(key_t.insert().values(**self._row(new)))

    def prune(self) -> list[str]:
        """Drop keys retired longer ago than the overlap whose SETs are all delivered, refused
        or expired; returns their kids."""
        cutoff = int(time.time()) - self._settings.key_overlap_seconds
        with begin(self._engine) as conn:
            due = {
                r.kid: r.retired_at
                for r in conn.execute(
                    select(key_t.c.kid, key_t.c.retired_at).where(
                        key_t.c.retired_at.is_not(None), key_t.c.retired_at <= cutoff
                    )
                )
            }
            gone = sorted(set(due) - self._still_signing(conn, due)) if due else []
            if gone:
                conn.execute(delete(key_t).where(key_t.c.kid.in_(gone)))
        self.reload()
        return gone

    def _still_signing(self, conn: Any, due: dict[str, int]) -> set[str]:
        """The kids in ``due`` that signed a SET still pending. Only SETs made before the last
        of them was retired (plus the time other instances take to reload their keys) can
        hold one; the stream_id condition reads the pending rows off the delivery-order index."""
        horizon = max(due.values()) + 1 + 2 * self._settings.maintenance_interval
        rows = conn.execute(
            select(outbox_t.c.token).where(
                outbox_t.c.stream_id.in_(select(stream_t.c.stream_id)),
                outbox_t.c.state == PENDING,
                outbox_t.c.created_at < horizon,
            )
        )
        held: set[str] = set()
        for (token,) in rows:
            kid = _kid(token)
            if kid in due:
                held.add(kid)
                if len(held) == len(due):
                    break
        rows.close()
        return held


def read_key_file(path: Path) -> SigningKey:
    """A private key from a JWK, a private JWKS (its active key) or PEM file."""
    data = path.read_text()
    obj = json.loads(data) if data.lstrip().startswith("{") else None
    if isinstance(obj, dict) and "keys" in obj:
        return KeySet.from_private_jwks(obj).active
    key = load_signing_key(data)
    return SigningKey(key.kid, key.alg, key.key, key.created_at or int(time.time()))


def _kid(token: str) -> str | None:
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None
