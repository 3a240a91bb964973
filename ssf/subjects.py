"""Subject identifiers: RFC 9493 formats, the SSF §3.5 additions and complex subjects (SSF §3.3).

A :class:`Subject` is immutable and hashable by a canonical key, so it can index the
transmitter's subject table and the receiver's revocation state. Matching follows SSF
§8.1.3.1: simple subjects match only when identical; complex subjects match when every
member either side names is absent on the other side or identical (a missing member is
a wildcard).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from ssf.errors import InvalidSubject

__all__ = [
    "COMPLEX_MEMBERS",
    "SIMPLE_FORMATS",
    "Subject",
    "parse_subject",
    "subject_matches",
]

#: Format name → its required string members (RFC 9493 §3.2, SSF §3.5).
SIMPLE_FORMATS: Final[dict[str, tuple[str, ...]]] = {
    "account": ("uri",),
    "email": ("email",),
    "iss_sub": ("iss", "sub"),
    "opaque": ("id",),
    "phone_number": ("phone_number",),
    "did": ("url",),
    "uri": ("uri",),
    "jwt_id": ("iss", "jti"),
    "saml_assertion_id": ("issuer", "assertion_id"),
}
#: Formats whose members are arrays (checked separately).
ARRAY_FORMATS: Final = frozenset({"aliases", "ip-addresses"})
#: Complex-subject members named by SSF §3.3; others are allowed and kept.
COMPLEX_MEMBERS: Final = ("user", "device", "session", "application", "tenant", "org_unit", "group")
#: Pre-1.0 format names still sent by live transmitters.
_LEGACY_FORMATS: Final = {"phone": "phone_number", "iss-sub": "iss_sub", "issuer_subject_id": "iss_sub"}

_MAX_DEPTH: Final = 3
_E164: Final = re.compile(r"^\+[1-9][0-9]{1,14}$")
_URI_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: W3C DID syntax: did:<method>:<method-specific-id> (a DID URL may add path/query/fragment).
_DID: Final = re.compile(r"^did:[a-z0-9]+:\S+")


class Subject(Mapping[str, Any]):
    """A validated subject identifier; a read-only mapping of its wire members.

    The wire form and the canonical key are computed on first use and then kept: a
    receiver that only reads a SET's subject never pays for them.
    """

    __slots__ = ("_data", "_hash", "_json", "_key", "_wire")

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self._wire: dict[str, Any] | None = None
        self._json: str | None = None
        self._key: str | None = None
        self._hash: int | None = None

    @property
    def format(self) -> str:
        return str(self._data["format"])

    @property
    def key(self) -> str:
        """Canonical text, equal for equal subjects: the index key for stores."""
        key = self._key
        if key is None:
            key = self._key = json.dumps(self._wire_form(), sort_keys=True, separators=(",", ":"))
        return key

    def to_json(self) -> str:
        """The wire form as compact ASCII JSON (member order as given), encoded once."""
        text = self._json
        if text is None:
            text = self._json = json.dumps(self._wire_form(), separators=(",", ":"))
        return text

    def _wire_form(self) -> dict[str, Any]:
        """The cached wire dict; callers must not mutate it (``to_dict`` hands out copies)."""
        wire = self._wire
        if wire is None:
            wire = self._wire = _plain(self._data)
        return wire

    @property
    def is_complex(self) -> bool:
        return self.format == "complex"

    def member(self, name: str) -> Subject | None:
        """A complex subject's member (``user``, ``device`` …), or None."""
        value = self._data.get(name) if self.is_complex else None
        return value if isinstance(value, Subject) else None

    def members(self) -> dict[str, Subject]:
        """The complex subject's members by name ({} for a simple subject)."""
        if not self.is_complex:
            return {}
        return {k: v for k, v in self._data.items() if isinstance(v, Subject)}

    def to_dict(self) -> dict[str, Any]:
        """The SSF 1.0 wire form (complex subjects carry ``"format": "complex"``); a fresh copy."""
        return _plain(self._data)

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        value = self._hash
        if value is None:
            value = self._hash = hash(self.key)
        return value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Subject):
            return self is other or self.key == other.key
        return NotImplemented

    def __repr__(self) -> str:
        return f"Subject({self.key})"

    @classmethod
    def opaque(cls, id_: str) -> Subject:
        return parse_subject({"format": "opaque", "id": id_})

    @classmethod
    def email(cls, email: str) -> Subject:
        return parse_subject({"format": "email", "email": email})

    @classmethod
    def iss_sub(cls, iss: str, sub: str) -> Subject:
        return parse_subject({"format": "iss_sub", "iss": iss, "sub": sub})

    @classmethod
    def complex(cls, **members: Subject | Mapping[str, Any]) -> Subject:
        data: dict[str, Any] = {"format": "complex"}
        for name, value in members.items():
            data[name] = dict(value.to_dict() if isinstance(value, Subject) else value)
        return parse_subject(data)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, Subject):
            out[k] = v.to_dict()
        elif isinstance(v, list):
            out[k] = [x.to_dict() if isinstance(x, Subject) else x for x in v]
        else:
            out[k] = v
    return out


def parse_subject(value: object, *, _depth: int = 0, _in_complex: bool = False) -> Subject:
    """Validate a subject identifier and normalise legacy dialects to the SSF 1.0 form.

    Accepted on input only: Google's ``subject_type`` in place of ``format`` (RISC §3),
    ``phone`` for ``phone_number`` (as format name and as member name), ``iss-sub`` (Google)
    and ``issuer_subject_id`` for ``iss_sub``, and a complex subject without a ``format``
    member (the pre-final drafts). Unknown formats are kept as proprietary (SSF §3.4)
    provided they are JSON objects with a string ``format``. Every failure is an
    :class:`InvalidSubject`.
    """
    if type(value) is dict:
        # Fast path: a simple SSF 1.0 identifier with its members present (the usual case).
        fmt = value.get("format")
        required = SIMPLE_FORMATS.get(fmt) if type(fmt) is str else None
        if required is not None and "subject_type" not in value:
            for name in required:
                member = value.get(name)
                if type(member) is not str or not member:
                    break
            else:
                data = value.copy()
                check = _CHECKS.get(fmt)  # type: ignore[arg-type]
                if check is not None:
                    check(data)
                return Subject(data)
    if type(value) is Subject:
        if _in_complex and value.is_complex:
            raise InvalidSubject("a complex subject member must be a simple identifier")
        return value
    if _depth > _MAX_DEPTH:
        raise InvalidSubject("subject identifiers nest too deeply")
    if type(value) is dict:
        data = value.copy()
    elif isinstance(value, Mapping):
        data = dict(value)
    else:
        raise InvalidSubject("a subject identifier must be a JSON object")
    if "subject_type" in data:
        legacy = data.pop("subject_type")
        if "format" not in data:
            data["format"] = legacy
    fmt = data.get("format")
    if fmt is None and not _in_complex and any(m in data for m in COMPLEX_MEMBERS):
        fmt = "complex"
    if type(fmt) is not str or not fmt:
        raise InvalidSubject("a subject identifier needs a string 'format'")
    fmt = _LEGACY_FORMATS.get(fmt, fmt)
    data["format"] = fmt

    required = SIMPLE_FORMATS.get(fmt)
    if required is not None:
        if fmt == "phone_number" and "phone_number" not in data and "phone" in data:
            data["phone_number"] = data.pop("phone")
        for name in required:
            member = data.get(name)
            if type(member) is not str or not member:
                raise InvalidSubject(f"'{fmt}' subject needs a non-empty string '{name}'")
        check = _CHECKS.get(fmt)
        if check is not None:
            check(data)
    elif fmt == "complex":
        if _in_complex:
            raise InvalidSubject("a complex subject member must be a simple identifier")
        _parse_complex(data, _depth)
    elif fmt == "aliases":
        ids = data.get("identifiers")
        if type(ids) is not list or not ids:
            raise InvalidSubject("'aliases' subject needs a non-empty 'identifiers' array")
        parsed = [parse_subject(i, _depth=_depth + 1, _in_complex=True) for i in ids]
        if any(p.format == "aliases" for p in parsed):
            raise InvalidSubject("'aliases' must not contain an 'aliases' identifier")
        data["identifiers"] = parsed
    elif fmt == "ip-addresses":
        addrs = data.get("ip-addresses")
        if type(addrs) is not list or not addrs:
            raise InvalidSubject("'ip-addresses' subject needs a non-empty 'ip-addresses' array")
        for a in addrs:
            try:
                ipaddress.ip_address(a if type(a) is str else "")
            except ValueError:
                raise InvalidSubject("'ip-addresses' holds a value that is not an IP address") from None
    return Subject(data)


def _check_email(data: dict[str, Any]) -> None:
    """RFC 5322 addr-spec, loosely: a local part, '@', a domain; no whitespace anywhere.

    (String methods, not a regex: this runs once per SET on a receiver's hot path.)
    """
    email: str = data["email"]
    local, _, domain = email.rpartition("@")
    if not local or not domain or email.split() != [email]:
        raise InvalidSubject("'email' is not an addr-spec")
    # RFC 5321: the domain is case-insensitive; the local part is kept as sent.
    lowered = domain.lower()
    if lowered != domain:
        data["email"] = f"{local}@{lowered}"


def _check_phone(data: dict[str, Any]) -> None:
    if not _E164.match(data["phone_number"]):
        raise InvalidSubject("'phone_number' must be E.164 with a leading '+'")


def _check_account(data: dict[str, Any]) -> None:
    if not data["uri"].startswith("acct:") or len(data["uri"]) < 6:
        raise InvalidSubject("'account' subject needs an acct: URI")


def _check_uri(data: dict[str, Any]) -> None:
    if not _URI_SCHEME.match(data["uri"]):
        raise InvalidSubject("'uri' subject needs an absolute URI")


def _check_did(data: dict[str, Any]) -> None:
    if not _DID.match(data["url"]):
        raise InvalidSubject("'did' subject needs a DID URL")


_CHECKS: Final[dict[str, Callable[[dict[str, Any]], None]]] = {
    "email": _check_email,
    "phone_number": _check_phone,
    "account": _check_account,
    "uri": _check_uri,
    "did": _check_did,
}


def _parse_complex(data: dict[str, Any], depth: int) -> None:
    data["format"] = "complex"
    members = 0
    for name, value in list(data.items()):
        if name == "format":
            continue
        if name in COMPLEX_MEMBERS or isinstance(value, Mapping):
            data[name] = parse_subject(value, _depth=depth + 1, _in_complex=True)
            members += 1
        else:
            raise InvalidSubject(f"complex subject member '{name}' must be a subject identifier")
    if members == 0:
        raise InvalidSubject("a complex subject needs at least one member")


def subject_matches(a: Subject, b: Subject) -> bool:
    """SSF §8.1.3.1: does subject ``a`` match subject ``b`` (symmetrically)?

    Two simple subjects match only when identical. When either is complex, every member
    name present on both sides must hold identical values; a member absent on one side is
    a wildcard. A simple subject compared with a complex one matches when it equals one of
    the complex subject's members (it names that member's principal and nothing else).
    """
    if a.is_complex and b.is_complex:
        am, bm = a.members(), b.members()
        shared = am.keys() & bm.keys()
        return bool(shared) and all(am[k] == bm[k] for k in shared)
    if a.is_complex:
        return b in a.members().values()
    if b.is_complex:
        return a in b.members().values()
    return a == b
