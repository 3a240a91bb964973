"""Revocation state: what the events said about each subject, checked per request in memory.

The request path never touches storage: a token's subjects (user as ``iss_sub`` and ``email``,
session, device, tenant, the token itself as ``jwt_id``) are a handful of compact string
keys, and the check is a few dict lookups. Complex event subjects (user + device, tenant +
user …) are indexed by each member, so they cost nothing when there are none and a short
list walk when there are.

Matching follows SSF §8.1.3.1 (as :func:`ssf.subjects.subject_matches`): a simple event
subject hits a token when it equals one of the token's members; a complex one hits when
every member name both sides have holds the same identifier (an absent member is a
wildcard) and they share at least one.

Every change is a :class:`Mutation` (subject, field, value, time); applying one is
idempotent and order-tolerant (cutoffs only move forward, flags keep the latest by event
time), so a re-delivered or fanned-out mutation changes nothing.

A revoked session (or token) refuses every token of it, and its entry may go once every
such token has expired: so it must remember when it was revoked. It is held as one float,
``REVOKED + revocation time`` (rounded up to the minute): above any real ``iat``, so the
``iat <= cutoff`` check refuses every token as before, and nothing beyond the dict entry a
revoked session took anyway (the float objects are shared per minute; a million revoked
sessions matter here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ssf.subjects import Subject, parse_subject

__all__ = [
    "CUTOFF",
    "DISABLED",
    "NONCOMPLIANT",
    "Mutation",
    "RevocationState",
    "SubjectState",
    "TokenSubjects",
    "cutoff_time",
    "is_revoked",
    "subject_key",
]

CUTOFF: Final = "cutoff"
DISABLED: Final = "disabled"
NONCOMPLIANT: Final = "noncompliant"
ASSURANCE: Final = "assurance"
RISK: Final = "risk"
CLAIMS: Final = "claims"
FIELDS: Final = frozenset({CUTOFF, DISABLED, NONCOMPLIANT, ASSURANCE, RISK, CLAIMS})
_SEP: Final = "\x1f"
_NEG_INF: Final = -math.inf
#: A revoked session's cutoff is ``REVOKED + revocation time``: 2**52 s is far past any real
#: ``iat`` (year ~142 million), and floats there still count whole seconds exactly.
REVOKED: Final = 2.0**52


#: Revocation times are kept to the minute (rounded up: never forgotten early).
_GRAIN: Final = 60
#: One float object per revocation minute, shared by every session revoked in it.
_REVOKED_VALUES: dict[float, float] = {}


def _revoked_value(at: float) -> float:
    """The cutoff of a session revoked at ``at``."""
    if not math.isfinite(at):
        return math.inf  # no usable time: kept for good
    value = REVOKED + max(0.0, float(math.ceil(at / _GRAIN) * _GRAIN))
    shared = _REVOKED_VALUES.get(value)
    if shared is None:
        if len(_REVOKED_VALUES) >= 100_000:
            _REVOKED_VALUES.clear()
        shared = _REVOKED_VALUES[value] = value
    return shared


def _minute(at: float) -> int:
    return int(at // _GRAIN)


def _index(index: dict[int, list[str]], key: str, old: float, new: float) -> None:
    """List ``key`` under the minute of its new cutoff's time (unless it is there already)."""
    at = cutoff_time(new)
    if not math.isfinite(at):
        return  # kept for good: never pruned
    minute = _minute(at)
    if old != _NEG_INF:
        was = cutoff_time(old)
        if math.isfinite(was) and _minute(was) == minute:
            return
    refs = index.get(minute)
    if refs is None:
        index[minute] = [key]
    else:
        refs.append(key)


def is_revoked(cutoff: float) -> bool:
    """Does this cutoff refuse every token (a revoked session or token)?"""
    return cutoff >= REVOKED


def cutoff_time(cutoff: float) -> float:
    """When the entry was made: a cutoff's own time, or a revoked session's revocation time.
    Past it by the longest token lifetime, the entry refuses no live token any more."""
    return cutoff - REVOKED if cutoff >= REVOKED else cutoff


def merge_cutoffs(old: float, new: float) -> float:
    """One cutoff that refuses at least what ``old`` and ``new`` refuse, for as long as either
    would be kept: a revoked session and a finite cutoff of the same subject become a revoked
    session at the later of their two times (a later cutoff is not lost behind an older
    revocation, nor does a back-dated revocation shorten a later cutoff's retention). The
    entry's time never moves back, so pruning by it never forgets a newer fact early."""
    if old < REVOKED and new < REVOKED:
        return new if new > old else old
    return _revoked_value(max(cutoff_time(old), cutoff_time(new)))


def _as_cutoff(m: Mutation) -> float:
    if m.value is None:
        return _NEG_INF
    value = float(m.value)
    return _revoked_value(m.at) if value == math.inf else value


def subject_key(subject: Subject) -> str:
    """A short canonical key for a simple subject (memory matters at a million entries)."""
    fmt = subject.format
    if fmt == "opaque":
        return f"o:{subject['id']}"
    if fmt == "iss_sub":
        return f"i:{subject['iss']}{_SEP}{subject['sub']}"
    if fmt == "email":
        return f"e:{subject['email']}"
    if fmt == "jwt_id":
        return f"j:{subject['iss']}{_SEP}{subject['jti']}"
    return subject.key


def row_key(subject: Subject) -> str:
    """The storage key of a subject: the compact key when simple, the canonical JSON when complex."""
    return subject.key if subject.is_complex else subject_key(subject)


def _email_key(email: str) -> str:
    local, _, domain = email.rpartition("@")
    return f"e:{local}@{domain.lower()}"


@dataclass(frozen=True, slots=True)
class Mutation:
    """One fact from one event: ``field`` of ``subject`` becomes ``value`` as of ``at``."""

    subject: Subject
    field: str
    value: Any
    at: float

    def to_json(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, float) and math.isinf(value):
            value = "inf" if value > 0 else None
        return {"subject": self.subject.to_dict(), "field": self.field, "value": value, "at": self.at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Mutation:
        fld = data["field"]
        if fld not in FIELDS:
            raise ValueError(f"unknown state field {fld!r}")
        value = data["value"]
        at = float(data["at"])
        if fld == CUTOFF and value is not None:
            value = float(value)
            if value == math.inf and at == 0.0:
                # Stored by the previous version without its time: taken as revoked now, so it
                # is kept a whole retention from here.
                at = float(math.ceil(time.time()))
        return cls(parse_subject(data["subject"]), fld, value, at)


@dataclass(frozen=True, slots=True)
class SubjectState:
    """What the policy sees about a token's subjects right now (merged over every match)."""

    revoked: bool = False
    disabled: bool = False
    device_compliant: bool = True
    assurance_level: str | None = None
    assurance_namespace: str | None = None
    assurance_direction: str | None = None
    risk_level: str | None = None
    risk_principal: str | None = None
    #: token-claims-change: claim name → new value, to lay over the token's own claims.
    claims: Mapping[str, Any] | None = None

    @property
    def refused(self) -> bool:
        return self.revoked or self.disabled


CLEAR: Final = SubjectState()


class _Record:
    """Everything but the cutoff of one subject (rare; the cutoff lives in a flat dict)."""

    __slots__ = ("assurance", "claims", "cutoff", "disabled", "noncompliant", "risk", "subject")

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        self.cutoff: float = _NEG_INF  # complex subjects only
        self.disabled: tuple[bool, float] | None = None
        self.noncompliant: tuple[bool, float] | None = None
        self.assurance: tuple[dict[str, Any], float] | None = None
        self.risk: tuple[dict[str, Any], float] | None = None
        self.claims: dict[str, tuple[Any, float]] | None = None

    def apply(self, m: Mutation) -> bool:
        f, at = m.field, m.at
        if f == CUTOFF:
            value = merge_cutoffs(self.cutoff, _as_cutoff(m))
            if value > self.cutoff:
                self.cutoff = value
                return True
            return False
        if f == CLAIMS:
            if not isinstance(m.value, Mapping):
                return False
            claims = self.claims if self.claims is not None else {}
            changed = False
            for name, v in m.value.items():
                old = claims.get(name)
                if old is None or at >= old[1]:
                    changed = changed or old is None or old[0] != v
                    claims[name] = (v, at)
            self.claims = claims
            return changed
        current = getattr(self, f)
        if current is not None and at < current[1]:
            return False  # an older fact never overwrites a newer one
        new = (m.value, at)
        if current == new:
            return False
        setattr(self, f, new)
        return True

    @property
    def empty(self) -> bool:
        """No fact left (a pruned complex subject's record can go)."""
        return (
            self.cutoff == _NEG_INF
            and self.disabled is None
            and self.noncompliant is None
            and self.assurance is None
            and self.risk is None
            and not self.claims
        )

    def mutations(self) -> Iterator[Mutation]:
        """The record as mutations (its durable form; replaying them rebuilds it)."""
        s = self.subject
        if self.cutoff != _NEG_INF:
            yield _cutoff_mutation(s, self.cutoff)
        for f in (DISABLED, NONCOMPLIANT, ASSURANCE, RISK):
            cur = getattr(self, f)
            if cur is not None:
                yield Mutation(s, f, cur[0], cur[1])
        for name, (v, at) in (self.claims or {}).items():
            yield Mutation(s, CLAIMS, {name: v}, at)


def _cutoff_mutation(subject: Subject, cutoff: float) -> Mutation:
    """A cutoff's durable form; a revoked session keeps its revocation time in ``at``."""
    if cutoff >= REVOKED:
        return Mutation(subject, CUTOFF, "inf", cutoff_time(cutoff) if math.isfinite(cutoff) else 0.0)
    return Mutation(subject, CUTOFF, cutoff, 0.0)


class _View:
    """Accumulates matching records into one :class:`SubjectState`."""

    __slots__ = ("assurance", "claims", "disabled", "noncompliant", "revoked", "risk")

    def __init__(self) -> None:
        self.revoked = False
        self.disabled: tuple[bool, float] | None = None
        self.noncompliant = False
        self.assurance: tuple[dict[str, Any], float] | None = None
        self.risk: tuple[dict[str, Any], float] | None = None
        self.claims: dict[str, tuple[Any, float]] | None = None

    def add(self, rec: _Record) -> None:
        if rec.disabled is not None and rec.disabled[0]:
            self.disabled = rec.disabled
        if rec.noncompliant is not None and rec.noncompliant[0]:
            self.noncompliant = True
        if rec.assurance is not None and (self.assurance is None or rec.assurance[1] >= self.assurance[1]):
            self.assurance = rec.assurance
        if rec.risk is not None and (self.risk is None or rec.risk[1] >= self.risk[1]):
            self.risk = rec.risk
        if rec.claims:
            claims = self.claims if self.claims is not None else {}
            for name, item in rec.claims.items():
                old = claims.get(name)
                if old is None or item[1] >= old[1]:
                    claims[name] = item
            self.claims = claims

    def result(self) -> SubjectState:
        if (
            not self.revoked
            and self.disabled is None
            and not self.noncompliant
            and self.assurance is None
            and self.risk is None
            and self.claims is None
        ):
            return CLEAR
        a = self.assurance[0] if self.assurance else {}
        r = self.risk[0] if self.risk else {}
        return SubjectState(
            revoked=self.revoked,
            disabled=self.disabled is not None,
            device_compliant=not self.noncompliant,
            assurance_level=_str_or_none(a.get("level")),
            assurance_namespace=_str_or_none(a.get("namespace")),
            assurance_direction=_str_or_none(a.get("direction")),
            risk_level=_str_or_none(r.get("level")),
            risk_principal=_str_or_none(r.get("principal")),
            claims={k: v for k, (v, _) in self.claims.items()} if self.claims else None,
        )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class TokenSubjects:
    """The subjects one access token speaks for, as member name → alternative keys.

    user = ``iss_sub`` (token ``iss`` + ``sub``) and ``email`` when the token has one;
    session = ``opaque`` ``sid``; device = ``opaque`` ``device_id``; tenant = ``opaque``
    ``tenant``/``tid``; the token itself = ``jwt_id`` (``iss`` + ``jti``).
    """

    members: Mapping[str, tuple[str, ...]]
    keys: tuple[str, ...]

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> TokenSubjects:
        members: dict[str, tuple[str, ...]] = {}
        iss, sub = claims.get("iss"), claims.get("sub")
        user: list[str] = []
        if isinstance(iss, str) and isinstance(sub, str) and iss and sub:
            user.append("i:" + iss + _SEP + sub)
        email = claims.get("email")
        if isinstance(email, str) and "@" in email:
            user.append(_email_key(email))
        if user:
            members["user"] = tuple(user)
        for name, claim_names in (
            ("session", ("sid",)),
            ("device", ("device_id",)),
            ("tenant", ("tenant", "tid")),
        ):
            for claim in claim_names:
                value = claims.get(claim)
                if isinstance(value, str) and value:
                    members[name] = ("o:" + value,)
                    break
        keys = [k for alts in members.values() for k in alts]
        jti = claims.get("jti")
        if isinstance(iss, str) and isinstance(jti, str) and iss and jti:
            keys.append("j:" + iss + _SEP + jti)
        return cls(members, tuple(keys))


class _ComplexEntry:
    __slots__ = ("members", "record")

    def __init__(self, record: _Record, members: dict[str, str]) -> None:
        self.record = record
        self.members = members  # member name → simple key

    def matches(self, token: TokenSubjects) -> bool:
        shared = False
        tm = token.members
        for name, key in self.members.items():
            alts = tm.get(name)
            if alts is None:
                continue  # absent on the token: a wildcard
            if key not in alts:
                return False
            shared = True
        return shared


Listener = Callable[[Mutation], None]


@dataclass(slots=True)
class RevocationState:
    """The receiver's whole view of the events so far; ``generation`` moves on every change."""

    cutoffs: dict[str, float] = field(default_factory=dict)
    records: dict[str, _Record] = field(default_factory=dict)
    complex: dict[str, _ComplexEntry] = field(default_factory=dict)
    by_member: dict[str, list[_ComplexEntry]] = field(default_factory=dict)
    generation: int = 0
    listeners: list[Listener] = field(default_factory=list)
    #: Kept as cutoffs change, so reporting never walks a million entries.
    total_cutoffs: int = 0
    total_revoked: int = 0
    #: Cutoff keys by the minute of their entry's time (simple keys; complex subject keys), so
    #: pruning visits the old minutes only and never walks every entry. A key is listed under
    #: its current minute; a moved one leaves a stale reference behind, dropped when met.
    by_minute: dict[int, list[str]] = field(default_factory=dict)
    complex_by_minute: dict[int, list[str]] = field(default_factory=dict)

    # --- writing ---------------------------------------------------------------------
    def apply(self, m: Mutation) -> bool:
        """Apply one mutation; True when it changed anything (listeners run then)."""
        subject = m.subject
        if subject.is_complex:
            crec = self._complex_record(subject)
            was = crec.cutoff
            changed = crec.apply(m)
            if changed and m.field == CUTOFF:
                _index(self.complex_by_minute, subject.key, was, crec.cutoff)
        elif m.field == CUTOFF:
            key = subject_key(subject)
            old = self.cutoffs.get(key, _NEG_INF)
            value = _as_cutoff(m)
            if old != _NEG_INF:
                value = merge_cutoffs(old, value)
            changed = value > old
            if changed:
                self.cutoffs[key] = value
                if old == _NEG_INF:
                    self.total_cutoffs += 1
                if value >= REVOKED > old:
                    self.total_revoked += 1
                # _index inlined: this runs for every revocation applied (a million at start-up).
                at = value - REVOKED if value >= REVOKED else value
                if at != math.inf:
                    minute = int(at // _GRAIN)
                    if old == _NEG_INF or int((old - REVOKED if old >= REVOKED else old) // _GRAIN) != minute:
                        refs = self.by_minute.get(minute)
                        if refs is None:
                            self.by_minute[minute] = [key]
                        else:
                            refs.append(key)
        else:
            key = subject_key(subject)
            rec = self.records.get(key)
            if rec is None:
                rec = self.records[key] = _Record(subject)
            changed = rec.apply(m)
        if changed:
            self.generation += 1
            for listener in self.listeners:
                listener(m)
        return changed

    def apply_all(self, mutations: Iterable[Mutation]) -> int:
        return sum(1 for m in mutations if self.apply(m))

    def _complex_record(self, subject: Subject) -> _Record:
        entry = self.complex.get(subject.key)
        if entry is None:
            members = {name: subject_key(s) for name, s in subject.members().items()}
            entry = _ComplexEntry(_Record(subject), members)
            self.complex[subject.key] = entry
            for key in set(members.values()):
                self.by_member.setdefault(key, []).append(entry)
        return entry.record

    def _drop_complex(self, key: str, entry: _ComplexEntry) -> None:
        """Forget a complex subject left with no fact, from every index that lists it (a
        pruned one would otherwise stay in memory, and on every request's member walk)."""
        del self.complex[key]
        for member in set(entry.members.values()):
            entries = self.by_member.get(member)
            if entries is None:
                continue
            entries[:] = [e for e in entries if e is not entry]
            if not entries:
                del self.by_member[member]

    def prune_cutoffs(self, before: float) -> tuple[list[str], list[Subject]]:
        """Forget cutoffs and revoked sessions made before ``before`` (the caller's bound:
        every token they could refuse has expired by then), all at once.

        Returns the simple keys that lost their cutoff, and the complex subjects whose cutoff
        was reset.
        """
        dead: list[str] = []
        reset: list[Subject] = []
        for d, r in self.prune_chunks(before, size=1 << 62):
            dead += d
            reset += r
        return dead, reset

    def prune_chunks(
        self, before: float, size: int = 2_000
    ) -> Generator[tuple[list[str], list[Subject]], None, None]:
        """:meth:`prune_cutoffs` in steps of at most ``size`` visited entries, for a caller
        that yields to the event loop between two (a million old entries are ~0.1 s of work).

        Only the minutes before ``before`` are visited. Changes made between two steps are
        safe: every entry is judged by its value when its turn comes, and the minutes that
        appear meanwhile wait for the next pass.
        """
        dead: list[str] = []
        reset: list[Subject] = []
        budget = size
        for index, simple in ((self.by_minute, True), (self.complex_by_minute, False)):
            for minute in sorted(m for m in index if m * _GRAIN < before):
                refs = index.get(minute)
                if refs is None:
                    continue
                keep: list[str] = []  # in the minute ``before`` falls in, and younger than it
                try:
                    while refs:
                        key = refs.pop()
                        entry: _ComplexEntry | None = None
                        if simple:
                            cut = self.cutoffs.get(key, _NEG_INF)
                        else:
                            entry = self.complex.get(key)
                            cut = entry.record.cutoff if entry is not None else _NEG_INF
                        if cut != _NEG_INF:
                            at = cutoff_time(cut)
                            if at < before:
                                if simple:
                                    del self.cutoffs[key]
                                    self.total_cutoffs -= 1
                                    if cut >= REVOKED:
                                        self.total_revoked -= 1
                                    dead.append(key)
                                elif entry is not None:
                                    entry.record.cutoff = _NEG_INF
                                    if entry.record.empty:
                                        self._drop_complex(key, entry)
                                    reset.append(entry.record.subject)
                            elif _minute(at) == minute:
                                keep.append(key)
                            # else: a stale reference (the entry moved to a later minute)
                        budget -= 1
                        if budget <= 0:
                            if dead or reset:
                                self.generation += 1
                            yield dead, reset
                            dead, reset, budget = [], [], size
                finally:
                    refs.extend(keep)
                    if not refs and index.get(minute) is refs:
                        del index[minute]
        if dead or reset:
            self.generation += 1
            yield dead, reset

    # --- reading (the request path) ---------------------------------------------------
    def evaluate(self, token: TokenSubjects, iat: float) -> SubjectState:
        """The state of a token issued at ``iat``: a few dict lookups, no I/O."""
        view: _View | None = None
        cutoffs, records = self.cutoffs, self.records
        for key in token.keys:
            cut = cutoffs.get(key)
            if cut is not None and iat <= cut:
                view = view or _View()
                view.revoked = True
            rec = records.get(key)
            if rec is not None:
                view = view or _View()
                view.add(rec)
        if self.by_member:
            for alts in token.members.values():
                for key in alts:
                    for entry in self.by_member.get(key, ()):
                        if entry.matches(token):
                            view = view or _View()
                            if iat <= entry.record.cutoff:
                                view.revoked = True
                            view.add(entry.record)
        return CLEAR if view is None else view.result()

    def affects(self, subject: Subject, token: TokenSubjects) -> bool:
        """Does an event about ``subject`` concern this token (SSF §8.1.3.1)?"""
        if subject.is_complex:
            members = {name: subject_key(s) for name, s in subject.members().items()}
            return _ComplexEntry(_Record(subject), members).matches(token)
        return subject_key(subject) in token.keys

    # --- durable form -----------------------------------------------------------------
    def export(self, subject: Subject) -> list[Mutation]:
        """The current facts about one subject, as mutations (what storage keeps)."""
        if subject.is_complex:
            entry = self.complex.get(subject.key)
            return list(entry.record.mutations()) if entry else []
        key = subject_key(subject)
        out: list[Mutation] = []
        cut = self.cutoffs.get(key)
        if cut is not None:
            out.append(_cutoff_mutation(subject, cut))
        rec = self.records.get(key)
        if rec is not None:
            out.extend(rec.mutations())
        return out

    def counts(self) -> dict[str, int]:
        return {
            "cutoffs": self.total_cutoffs - self.total_revoked,
            "revoked_sessions": self.total_revoked,
            "subjects": len(self.records),
            "complex_subjects": len(self.complex),
            "disabled": sum(1 for r in self._all_records() if r.disabled and r.disabled[0]),
            "noncompliant": sum(1 for r in self._all_records() if r.noncompliant and r.noncompliant[0]),
        }

    def _all_records(self) -> Iterator[_Record]:
        yield from self.records.values()
        for entry in self.complex.values():
            yield entry.record
