"""The check of one call: a CDS Hooks `Authorization` header against the trusted-issuer allow-list.

PyJWT verifies signatures and `aud`. Time claims are checked here, against an injectable clock, so that
tests can replay the specification's own example token (issued in 2011).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import jwt

from cds.errors import CdsError
from cds.service.auth.config import AuthConfig, TrustedIssuer
from cds.service.auth.errors import AuthError, shown
from cds.service.auth.jwks import KeySets
from cds.service.auth.keys import ACCEPTED_ALGORITHMS, VerificationKey
from cds.service.auth.replay import ReplayCache

log = logging.getLogger(__name__)

MAX_AUTHORIZATION_HEADER = 16 * 1024     # a CDS Hooks JWT is well under 2 KB


class JwtVerifier:
    """Checks a CDS Hooks `Authorization` header against the trusted-issuer allow-list."""

    def __init__(self, config: AuthConfig, replay_cache: ReplayCache, http_timeout: float = 2.0, *,
                 clock: Callable[[], float] = time.time):
        if not config.required:
            raise ValueError("authentication is off (CDS_AUTH=off): do not build a JwtVerifier")
        if not config.issuers:
            raise CdsError(f"{config.source}: no trusted issuers configured")
        self.config = config
        self.replay_cache = replay_cache
        self.http_timeout = http_timeout
        self._clock = clock
        # Every URL we may ever fetch is known now; a token can only pick among them.
        urls = {i.jwks_url for i in config.issuers.values() if i.jwks_url} | {
            url for i in config.issuers.values() for url in i.allowed_jku}
        self._key_sets = KeySets(urls, cache_seconds=config.jwks_cache_seconds,
                                 min_refetch_seconds=config.jwks_min_refetch_seconds, http_timeout=http_timeout)

    def verify(self, authorization_header: str | None, audience: str) -> dict:
        """The verified claims of the bearer JWT, or AuthError. `audience` is the invoked endpoint's URL."""
        token = _bearer_token(authorization_header)
        try:
            unverified = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("the bearer token is not a well-formed JWT") from None
        header, payload = unverified["header"], unverified["payload"]
        alg = _checked_header(header)

        iss = payload.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthError("the token has no 'iss' claim")
        issuer = self.config.issuers.get(iss)
        if issuer is None:
            log.warning("refused a token from an issuer that is not trusted: %s", shown(iss))
            raise AuthError(f"issuer {shown(iss)!r} is not trusted")
        if alg not in issuer.algorithms:
            raise AuthError(f"algorithm {alg} is not accepted from this issuer")

        key = self._key_for(issuer, header)
        algorithms = sorted(key.algorithms & issuer.algorithms)
        if alg not in algorithms:
            raise AuthError(f"algorithm {alg} does not fit the issuer's key {shown(header['kid'])!r}")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=algorithms, audience=audience,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False, "verify_iss": False,
                         "enforce_minimum_key_length": True},
            )
        except jwt.InvalidSignatureError:
            log.warning("refused a token with a bad signature: iss=%s kid=%s", shown(iss), shown(header["kid"]))
            raise AuthError("the token's signature does not verify with the issuer's key") from None
        except jwt.MissingRequiredClaimError as err:
            raise AuthError(f"the token has no {err.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"the token's aud does not name this endpoint ({audience})") from None
        except jwt.InvalidKeyError:
            raise AuthError("the issuer's key is too weak to be trusted") from None
        except jwt.PyJWTError:
            raise AuthError("the bearer token is not a valid JWT") from None

        expires_at = self._checked_times(claims)
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthError("the token's 'jti' must be a non-empty string")
        if "tenant" in claims and not isinstance(claims["tenant"], str):
            raise AuthError("the token's 'tenant' must be a string")
        # Last, so that only fully valid tokens use up a jti.
        if not self.replay_cache.first_use(iss, jti, expires_at):
            log.warning("refused a replayed token: iss=%s jti=%s", shown(iss), shown(jti))
            raise AuthError("the token was already used (replayed jti)")
        return claims

    def _checked_times(self, claims: dict) -> float:
        """Check exp, iat (and nbf if present); return when this token stops being acceptable."""
        now = self._clock()
        skew = self.config.clock_skew
        times = {}
        for name in ("exp", "iat", "nbf"):
            if name in claims:
                value = claims[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise AuthError(f"the token's {name!r} must be a number of seconds since the epoch")
                times[name] = float(value)
        if times["exp"] <= now - skew:
            raise AuthError("the token has expired")
        if times["iat"] > now + skew:
            raise AuthError("the token was issued in the future (iat); check the EHR's clock")
        if "nbf" in times and times["nbf"] > now + skew:
            raise AuthError("the token is not valid yet (nbf)")
        if times["exp"] - now > self.config.max_token_lifetime + skew:
            raise AuthError(f"the token is valid for too long (exp more than "
                            f"{self.config.max_token_lifetime:g} s ahead)")
        return times["exp"] + skew

    def _key_for(self, issuer: TrustedIssuer, header: dict) -> VerificationKey:
        kid = header["kid"]
        jku = header.get("jku")
        if jku is not None and (not isinstance(jku, str) or not issuer.jku_allowed(jku)):
            # Never fetched: honouring an arbitrary jku would let the token choose its own key.
            log.warning("refused a token whose jku is not allowed for %s: %s", shown(issuer.iss), shown(jku))
            raise AuthError("the token's jku is not on this issuer's allow-list")
        if issuer.public_key is not None:
            if issuer.kid is not None and kid != issuer.kid:
                raise AuthError(f"no key with kid {shown(kid)!r} for this issuer")
            return issuer.public_key
        key_set_url = jku or issuer.jwks_url
        if key_set_url is None:        # not reached: a TrustedIssuer has a pinned key or a JWK Set URL
            raise AuthError("no key is configured for this issuer")
        return self._key_sets.key(key_set_url, kid)

def _bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        raise AuthError("missing Authorization header: CDS Hooks calls need 'Authorization: Bearer <JWT>'")
    if len(authorization_header) > MAX_AUTHORIZATION_HEADER:
        raise AuthError("the Authorization header is too long")
    parts = authorization_header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthError("the Authorization header must be 'Bearer <JWT>'")
    token = parts[1]
    segments = token.split(".")
    if len(segments) != 3 or not segments[0] or not segments[1]:
        raise AuthError("the bearer token is not a JWT (expected header.payload.signature)")
    return token


def _checked_header(header: dict) -> str:
    """alg, typ and kid as the spec requires them; returns alg."""
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise AuthError("the token header has no 'alg'")
    if alg.lower() == "none":
        raise AuthError("alg 'none' is not allowed: CDS Hooks tokens must be signed")
    if alg.upper().startswith("HS"):
        raise AuthError(f"alg {shown(alg)!r} is not allowed: CDS Hooks forbids symmetric (shared-secret) "
                        "signatures; sign with ES384 or RS384")
    if alg not in ACCEPTED_ALGORITHMS:
        raise AuthError(f"alg {shown(alg)!r} is not accepted; use ES384 or RS384")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        raise AuthError("the token header must have typ 'JWT'")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("the token header has no 'kid'")
    return alg
