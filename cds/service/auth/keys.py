"""Which signature algorithms a public key may verify: derived from the key's type, never from a token."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

# Asymmetric JWS algorithms (RFC 7518 §3.1) we accept; the spec recommends ES384 and RS384.
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHM_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
ACCEPTED_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHM_BY_CURVE.values())


@dataclass(frozen=True)
class VerificationKey:
    """A public key and the algorithms it may verify (derived from its type, never from a token)."""

    key: Any                              # cryptography RSAPublicKey or EllipticCurvePublicKey
    algorithms: frozenset[str]


def verification_key(public_key: Any, declared_alg: str | None = None) -> VerificationKey | None:
    """Which algorithms may use this key: RSA → RS*/PS*, EC → the ES* of its curve; None if unusable."""
    if isinstance(public_key, rsa.RSAPublicKey):
        algorithms = RSA_ALGORITHMS
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in EC_ALGORITHM_BY_CURVE:
        algorithms = frozenset({EC_ALGORITHM_BY_CURVE[public_key.curve.name]})
    else:
        return None
    if declared_alg is not None:                       # a JWK's own `alg` narrows it further
        algorithms = algorithms & {declared_alg}
    return VerificationKey(public_key, algorithms) if algorithms else None

