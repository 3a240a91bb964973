"""Compact JWS pieces for SETs (RFC 7515), on joserfc's algorithms and keys.

joserfc supplies the algorithm registry, the key objects (import, generation, JWK) and
the key/algorithm compatibility checks. The per-SET primitive call is *prepared* once
per (key, algorithm): joserfc's ``check_key`` (key type, curve, ``use``, declared
``alg``) and ``get_op_key`` (``key_ops``, private vs public) run at preparation, and the
call itself goes straight to ``cryptography`` with joserfc's own padding and hash
parameters. Measured on the receiver's hot path this removes about 20 µs of per-call
wrapper work (ES256: ``get_op_key`` chain, new hash/ECDSA objects, hex-based integer
encoding) without dropping a check; see ``bench/set_bench.py``.
"""

from __future__ import annotations

import binascii
import json
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwa import JWSAlgModel
from pydantic_core import SchemaValidator, core_schema as cs

from ssf import uris
from ssf.keys import MIN_RSA_BITS, SIGNING_ALGORITHMS, AnyKey

__all__ = [
    "ALG_MODELS",
    "HMAC_ALGORITHMS",
    "REGISTRY",
    "Sign",
    "Verify",
    "b64url_decode",
    "b64url_decode_segments",
    "b64url_encode",
    "header_segment",
    "is_set_typ",
    "signer",
    "verifier",
]

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})

#: joserfc's registry for header checks; unknown header members are ignored (RFC 7515 §4).
REGISTRY: Final = jws.JWSRegistry(
    algorithms=[*SIGNING_ALGORITHMS, *HMAC_ALGORITHMS], strict_check_header=False
)


def _alg_model(name: str) -> JWSAlgModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA is deprecated" (RFC 9864)
        return REGISTRY.get_alg(name)


#: joserfc's implementation of every algorithm we sign or verify with, looked up once.
ALG_MODELS: Final[dict[str, JWSAlgModel]] = {
    name: _alg_model(name) for name in (*SIGNING_ALGORITHMS, *HMAC_ALGORITHMS)
}

Sign = Callable[[bytes], bytes]
Verify = Callable[[bytes, bytes], bool]

# (id(key), alg, purpose) → (key, prepared callable); the stored key keeps the id valid.
_PREPARED: dict[tuple[int, str, str], tuple[AnyKey, Any]] = {}
_PREPARED_MAX: Final = 512


def _remember(key: AnyKey, alg: str, purpose: str, fn: Any) -> Any:
    if len(_PREPARED) >= _PREPARED_MAX:
        _PREPARED.clear()
    _PREPARED[(id(key), alg, purpose)] = (key, fn)
    return fn


def signer(key: AnyKey, alg: str) -> Sign:
    """``sign(signing_input) -> JWS signature`` for this private key and algorithm.

    Raises joserfc's errors (or ``ValueError``/``TypeError``) when the key does not fit.
    """
    hit = _PREPARED.get((id(key), alg, "sign"))
    if hit is not None and hit[0] is key:
        fn: Sign = hit[1]
        return fn
    model = ALG_MODELS[alg]
    model.check_key(key)
    private: Any = key.get_op_key("sign")
    if isinstance(private, rsa.RSAPrivateKey):
        _check_rsa_size(private.key_size)
        pad, digest = model.padding, model.hash_alg()  # type: ignore[attr-defined]

        def fn(msg: bytes) -> bytes:
            return bytes(private.sign(msg, pad, digest))

    elif isinstance(private, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(model.hash_alg())  # type: ignore[attr-defined]
        size = (private.curve.key_size + 7) // 8

        def fn(msg: bytes) -> bytes:
            r, s = decode_dss_signature(private.sign(msg, ecdsa))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")  # RFC 7518 §3.4: R || S

    elif isinstance(private, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):

        def fn(msg: bytes) -> bytes:
            return bytes(private.sign(msg))

    else:  # HMAC: joserfc's own implementation

        def fn(msg: bytes) -> bytes:
            return model.sign(msg, key)

    return _remember(key, alg, "sign", fn)  # type: ignore[no-any-return]


def verifier(key: AnyKey, alg: str) -> Verify:
    """``verify(signing_input, signature) -> bool`` for this public key and algorithm."""
    hit = _PREPARED.get((id(key), alg, "verify"))
    if hit is not None and hit[0] is key:
        fn: Verify = hit[1]
        return fn
    model = ALG_MODELS[alg]
    model.check_key(key)
    public: Any = key.get_op_key("verify")
    if isinstance(public, rsa.RSAPublicKey):
        _check_rsa_size(public.key_size)
        pad, digest = model.padding, model.hash_alg()  # type: ignore[attr-defined]

        def fn(msg: bytes, sig: bytes) -> bool:
            try:
                public.verify(sig, msg, pad, digest)
            except InvalidSignature:
                return False
            return True

    elif isinstance(public, ec.EllipticCurvePublicKey):
        ecdsa = ec.ECDSA(model.hash_alg())  # type: ignore[attr-defined]
        size = (public.curve.key_size + 7) // 8

        def fn(msg: bytes, sig: bytes) -> bool:
            if len(sig) != 2 * size:  # RFC 7518 §3.4: exactly R || S, each of the curve's size
                return False
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            try:
                public.verify(der, msg, ecdsa)
            except InvalidSignature:
                return False
            return True

    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):

        def fn(msg: bytes, sig: bytes) -> bool:
            try:
                public.verify(sig, msg)
            except InvalidSignature:
                return False
            return True

    else:  # HMAC: joserfc's own constant-time comparison

        def fn(msg: bytes, sig: bytes) -> bool:
            return bool(model.verify(msg, sig, key))

    return _remember(key, alg, "verify", fn)  # type: ignore[no-any-return]


def _check_rsa_size(bits: int) -> None:
    """CAEP interop §2.6: RSA keys of at least 2048 bits, however the key object was made
    (the loaders refuse smaller ones; a hand-built ``SigningKey`` or ``PublicKeys`` does not).
    Runs once per key, at preparation."""
    if bits < MIN_RSA_BITS:
        raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits")


@lru_cache(maxsize=1024)
def header_segment(alg: str, kid: str) -> bytes:
    """BASE64URL of the SET's JOSE header: constant per signing key, so encoded once.
    Every SET names its key (``kid``), so an empty one is an error."""
    if not kid or type(kid) is not str:
        raise ValueError("a SET's header always carries a non-empty 'kid'")
    header = {"alg": alg, "typ": uris.SET_TYP, "kid": kid}
    return b64url_encode(json.dumps(header, separators=(",", ":")).encode())


_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def b64url_encode(data: bytes) -> bytes:
    """Unpadded base64url (RFC 7515 §2)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


#: Decodes a JSON array of base64 strings in one call, in Rust (``binascii`` walks the
#: input byte by byte: ~25 instructions a character, the largest non-signature cost of a
#: verify). The decoder refuses bad characters, impossible lengths and non-zero trailing
#: bits; it also takes the standard alphabet and padding, which :data:`_FOREIGN` refuses.
_SEGMENTS: Final = SchemaValidator(
    cs.tuple_schema([cs.bytes_schema(strict=True)], variadic_item_index=0, strict=True),
    cs.CoreConfig(val_json_bytes="base64"),
)
#: Not base64url (standard alphabet, padding), or would break the JSON string framing; as
#: ints, so that ``in`` is a plain ``memchr`` (a bytes needle first fails as an int, and
#: building that TypeError costs more than the search).
_FOREIGN: Final = tuple(b'+/="\\')


def b64url_decode_segments(text: bytes) -> tuple[bytes, ...]:
    """Each dot-separated segment of ``text`` as strict unpadded base64url (RFC 7515 §2):
    other alphabets, padding, stray characters and non-zero trailing bits are errors
    (``ValueError``), as in joserfc's decoder. ``text`` must be ASCII."""
    plus, slash, pad, quote, backslash = _FOREIGN
    if plus in text or slash in text or pad in text or quote in text or backslash in text:
        raise ValueError("not base64url")
    decoded: tuple[bytes, ...] = _SEGMENTS.validate_json(b'["' + text.replace(b".", b'","') + b'"]')
    return decoded


_DOT: Final = ord(".")


def b64url_decode(segment: bytes) -> bytes:
    """One strict unpadded base64url segment (see :func:`b64url_decode_segments`)."""
    if _DOT in segment or not segment.isascii():
        raise ValueError("not base64url")
    return b64url_decode_segments(segment)[0]


def is_set_typ(typ: object) -> bool:
    """RFC 7515 §4.1.9: ``typ`` compares case-insensitively; ``application/`` may be omitted."""
    if type(typ) is not str:
        return False
    value = typ.lower()
    return value == uris.SET_TYP or value == uris.SET_MEDIA_TYPE
