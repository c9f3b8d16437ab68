"""JWT bearer authentication of incoming CDS Hooks calls, as CDS Hooks 2.0 specifies it.

What the specification says, and what this module does about it. Source: CDS Hooks 2.0, "Security and
Safety › Trusting CDS Clients" (https://cds-hooks.hl7.org/2.0/#trusting-cds-clients; the same text is in
github.com/cds-hooks/docs, docs/specification/current.md):

- "Each time a CDS Client transmits a request to a CDS Service, the request MUST include an
  `Authorization` header presenting the JWT as a “Bearer” token: `Authorization: Bearer {{JWT}}`"
  → no header, another scheme, or a value that is not a compact JWS is refused.
- "The CDS Client MUST use its private key to digitally sign the JWT" → the signature is verified with the
  issuer's public key; the key comes from configuration, never from the token alone.
- Header fields: "alg REQUIRED", "kid REQUIRED ... MUST be unique within the CDS Client's JWK Set",
  "typ REQUIRED ... Fixed value: `JWT`", "jku OPTIONAL ... The URL to the JWK Set" → all three required
  fields are checked; `kid` selects the key in the JWK Set.
- Payload fields: "iss REQUIRED", "aud REQUIRED string or array of string", "exp REQUIRED",
  "iat REQUIRED", "jti REQUIRED ... A nonce string value that uniquely identifies this authentication
  JWT (used to protect against replay attacks)", "tenant OPTIONAL" → all five are required; `exp` and
  `iat` are checked against our clock with a small skew; a `jti` seen before from the same issuer is
  refused (see `ReplayCache`); `tenant` is returned in the claims, not interpreted.
- "CDS Services SHOULD maintain an allowlist of the `iss` and `jku` fields to only the CDS Clients they
  trust." → only issuers in the configured list are accepted, and a `jku` header is honoured only if it
  is on that issuer's list: a URL taken from a token is never fetched otherwise (the token is not
  trusted before its signature is checked, and fetching an attacker's URL would hand them the key).
- "For CDS Hooks, this value [aud] MUST be the URL of the CDS Service endpoint being invoked" → the
  caller passes the endpoint URL; a string `aud` must equal it, an array must contain it.
- "The CDS Client MUST make its public key, expressed as a JSON Web Key (JWK), available in a JWK Set"
  and "If the `jku` header field is ommitted, the CDS Client and CDS Service SHALL communicate the JWK
  Set out-of-band." → each trusted issuer is configured with its JWK Set URL or a pinned public key.
- "JWTs SHALL NOT be signed used the `none` algorithm" and "JWTs SHALL NOT be signed using any symmetric
  algorithm ... all HMAC based algorithms ... SHALL NOT be used" → `none` and HS* are refused before
  any key is looked up.
- "both ES384 and RS384 are RECOMMENDED" and "CDS Services SHOULD consider the algorithms they understand
  and trust" → the RSA (RS*, PS*) and EC (ES*) signature algorithms are accepted, optionally narrowed
  per issuer; an algorithm must also fit the key it is checked with (RSA key → RS*/PS*, P-384 key →
  ES384, ...), so a token cannot choose how our key is used.

PyJWT verifies signatures and `aud`. Its `PyJWKClient` is not used: it fetches any URL it is given, has
no overall time bound, and binds one algorithm to a key without `alg` (RSA → RS256 only).
Time claims are checked here, against an injectable clock, so that tests can replay the
specification's own example token (issued in 2011).
"""
from __future__ import annotations

import hashlib
import heapq
import ipaddress
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit

import jwt
import requests
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds.errors import CdsError

log = logging.getLogger("cds.service.auth")

# Asymmetric JWS algorithms (RFC 7518 §3.1) we accept; the spec recommends ES384 and RS384.
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHM_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
ACCEPTED_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHM_BY_CURVE.values())

MAX_AUTHORIZATION_HEADER = 16 * 1024     # a CDS Hooks JWT is well under 2 KB
MAX_JWKS_BYTES = 1024 * 1024
MAX_REASON_VALUE = 200                   # longest token-supplied value echoed in a reason


class AuthError(CdsError):
    """The call is not authenticated. `reason` is short, safe for a JSON body, and never holds the token.

    `status` is 401 when the caller's credentials are wrong or cannot be checked against the issuer's
    keys, 503 when our own replay store is unavailable (the caller did nothing wrong; retry later).
    """

    def __init__(self, reason: str, status: int = 401):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _shown(value: Any) -> str:
    """A token-supplied value, cut short, for an error reason or a log line."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_REASON_VALUE else text[:MAX_REASON_VALUE] + "…"


# --- configuration (read once, at start-up) --------------------------------------------------------


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


@dataclass(frozen=True)
class TrustedIssuer:
    """One EHR (CDS Client) we trust: its `iss`, where its keys are, and which `jku` values it may send."""

    iss: str
    jwks_url: str | None = None           # its JWK Set; or
    public_key: VerificationKey | None = None   # a key pinned out-of-band (no network use at all)
    kid: str | None = None                # with a pinned key: the `kid` its tokens must carry, if known
    allowed_jku: frozenset[str] = frozenset()   # `jku` header values we honour (jwks_url is implied)
    algorithms: frozenset[str] = ACCEPTED_ALGORITHMS
    fhir_servers: frozenset[str] = frozenset()  # `fhirServer` base URLs its calls may name (normalised)

    def __post_init__(self):
        if (self.jwks_url is None) == (self.public_key is None):
            raise ValueError("a trusted issuer needs exactly one of jwks_url and public_key")

    def jku_allowed(self, jku: str) -> bool:
        return jku == self.jwks_url or jku in self.allowed_jku


@dataclass(frozen=True)
class AuthConfig:
    """The trusted-issuer allow-list and the checks' tolerances (docs/security.md explains each)."""

    issuers: dict[str, TrustedIssuer] = field(default_factory=dict)
    required: bool = True                 # CDS_AUTH=off (development) sets False
    clock_skew: float = 60.0              # seconds of clock difference tolerated on exp/iat/nbf
    max_token_lifetime: float = 3600.0    # refuse tokens valid for longer (bounds the replay window)
    jwks_cache_seconds: float = 3600.0    # a JWK Set is refetched after this long
    jwks_min_refetch_seconds: float = 30.0  # at most one fetch per key set in this interval
    source: str = "<code>"                # where the config came from, for messages

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "AuthConfig":
        """CDS_AUTH (required | off) and CDS_TRUSTED_ISSUERS (path to the YAML allow-list)."""
        env = os.environ if environ is None else environ
        mode = env.get("CDS_AUTH", "required").strip().lower() or "required"
        if mode not in ("required", "off"):
            raise CdsError(f"CDS_AUTH={mode!r}: use 'required' or 'off' (development only)")
        if mode == "off":
            return cls(required=False, source="CDS_AUTH=off")
        path = env.get("CDS_TRUSTED_ISSUERS", "").strip()
        if not path:
            raise CdsError("CDS_AUTH=required needs CDS_TRUSTED_ISSUERS=<path to trusted-issuers.yaml> "
                           "(see docs/security.md), or CDS_AUTH=off for development")
        return cls.from_yaml(Path(path))

    @classmethod
    def from_yaml(cls, path: Path) -> "AuthConfig":
        """Load and validate the allow-list; every problem is a CdsError naming the file and the field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise CdsError(f"{path}: cannot read the trusted issuers file ({err.strerror or err})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(err, "problem", None) or "not valid YAML"
            raise CdsError(f"{where}: {problem}") from None
        return _parse_config(data, path)


_TOP_FIELDS = {"issuers", "clock_skew_seconds", "max_token_lifetime_seconds", "jwks_cache_seconds",
               "jwks_min_refetch_seconds"}
_ISSUER_FIELDS = {"iss", "jwks_url", "public_key", "public_key_file", "kid", "jku", "algorithms", "fhir_servers"}


def _parse_config(data: Any, path: Path) -> AuthConfig:
    def fail(where: str, message: str) -> CdsError:
        return CdsError(f"{path}: {where}: {message}" if where else f"{path}: {message}")

    if not isinstance(data, dict):
        raise fail("", "expected a mapping with an 'issuers' list (see config/trusted-issuers.example.yaml)")
    unknown = sorted(set(data) - _TOP_FIELDS)
    if unknown:
        raise fail("", f"unknown field {unknown[0]!r} (expected one of {', '.join(sorted(_TOP_FIELDS))})")

    def seconds(name: str, default: float) -> float:
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            raise fail(name, f"must be a number of seconds ≥ 0, not {value!r}")
        return float(value)

    entries = data.get("issuers")
    if not isinstance(entries, list) or not entries:
        raise fail("issuers", "must be a non-empty list of trusted EHRs")
    issuers: dict[str, TrustedIssuer] = {}
    for index, entry in enumerate(entries):
        issuer = _parse_issuer(entry, f"issuers[{index}]", path, fail)
        if issuer.iss in issuers:
            raise fail(f"issuers[{index}]", f"iss {issuer.iss!r} is listed twice")
        issuers[issuer.iss] = issuer
    return AuthConfig(
        issuers=issuers,
        required=True,
        clock_skew=seconds("clock_skew_seconds", 60.0),
        max_token_lifetime=seconds("max_token_lifetime_seconds", 3600.0),
        jwks_cache_seconds=seconds("jwks_cache_seconds", 3600.0),
        jwks_min_refetch_seconds=seconds("jwks_min_refetch_seconds", 30.0),
        source=str(path),
    )


def _parse_issuer(entry: Any, where: str, path: Path, fail: Callable[[str, str], CdsError]) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise fail(where, "each issuer must be a mapping with 'iss' and 'jwks_url' or 'public_key'")
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss.strip():
        raise fail(where, "'iss' (the issuer URI exactly as it appears in the EHR's tokens) is required")
    where = f"{where} (iss {iss!r})"
    unknown = sorted(set(entry) - _ISSUER_FIELDS)
    if unknown:
        raise fail(where, f"unknown field {unknown[0]!r} (expected one of {', '.join(sorted(_ISSUER_FIELDS))})")
    sources = [name for name in ("jwks_url", "public_key", "public_key_file") if entry.get(name) is not None]
    if len(sources) != 1:
        raise fail(where, "give exactly one of 'jwks_url', 'public_key' (PEM text) or 'public_key_file'"
                   + (f"; found {', '.join(sources)}" if sources else ""))

    jwks_url = None
    public_key = None
    if sources[0] == "jwks_url":
        jwks_url = _checked_url(entry["jwks_url"], f"{where}: jwks_url", fail)
    else:
        if sources[0] == "public_key":
            pem = entry["public_key"]
            if not isinstance(pem, str):
                raise fail(where, "'public_key' must be PEM text (-----BEGIN PUBLIC KEY----- ...)")
            origin = "public_key"
        else:
            key_path = entry["public_key_file"]
            if not isinstance(key_path, str):
                raise fail(where, "'public_key_file' must be a path")
            key_file = (path.parent / key_path)
            try:
                pem = key_file.read_text(encoding="utf-8")
            except OSError as err:
                raise fail(where, f"cannot read public_key_file {str(key_file)!r} ({err.strerror or err})") from None
            origin = f"public_key_file {str(key_file)!r}"
        public_key = _load_pem(pem, lambda message: fail(where, f"{origin}: {message}"))

    kid = entry.get("kid")
    if kid is not None and (jwks_url is not None or not isinstance(kid, str) or not kid):
        raise fail(where, "'kid' is only for a pinned public_key, and must be a non-empty string")

    jku = entry.get("jku", [])
    if isinstance(jku, str):
        jku = [jku]
    if not isinstance(jku, list):
        raise fail(where, "'jku' must be a list of URLs (the JWK Set URLs its tokens may name)")
    allowed_jku = frozenset(_checked_url(url, f"{where}: jku", fail) for url in jku)

    algorithms = entry.get("algorithms")
    if algorithms is None:
        allowed = ACCEPTED_ALGORITHMS
    else:
        if not isinstance(algorithms, list) or not algorithms or not all(isinstance(a, str) for a in algorithms):
            raise fail(where, "'algorithms' must be a non-empty list such as [ES384, RS384]")
        refused = [a for a in algorithms if a not in ACCEPTED_ALGORITHMS]
        if refused:
            raise fail(where, f"algorithm {refused[0]!r} is not accepted: CDS Hooks forbids 'none' and symmetric "
                       f"(HS*) algorithms; use one of {', '.join(sorted(ACCEPTED_ALGORITHMS))}")
        allowed = frozenset(algorithms)
    if public_key is not None and not (public_key.algorithms & allowed):
        raise fail(where, f"the public key can only verify {', '.join(sorted(public_key.algorithms))}, "
                   f"none of which is in 'algorithms'")
    servers = entry.get("fhir_servers", [])
    if isinstance(servers, str):
        servers = [servers]
    if not isinstance(servers, list):
        raise fail(where, "'fhir_servers' must be a list of FHIR base URLs this EHR's calls may name")
    fhir_servers = set()
    for url in servers:
        base = normalised_base_url(url) if isinstance(url, str) else None
        if base is None:
            raise fail(where, f"fhir_servers: {url!r} is not an http(s) base URL such as https://ehr.example.org/fhir")
        fhir_servers.add(base)
    return TrustedIssuer(iss=iss, jwks_url=jwks_url, public_key=public_key, kid=kid,
                         allowed_jku=allowed_jku, algorithms=allowed, fhir_servers=frozenset(fhir_servers))


def normalised_base_url(url: str) -> str | None:
    """scheme://host[:port]/path with scheme and host lower-cased, default port and trailing slash
    dropped; None for anything that is not a plain http(s) URL (credentials, query or fragment)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username is not None \
            or parts.password is not None or parts.query or parts.fragment:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"                                   # IPv6 literal
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def _checked_url(url: Any, where: str, fail: Callable[[str, str], CdsError]) -> str:
    """https only (the spec requires TLS), except plain http to this machine for local testing."""
    if not isinstance(url, str):
        raise fail(where, f"must be a URL, not {url!r}")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return url
    raise fail(where, f"{url!r} must be an https:// URL (plain http only to localhost)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_pem(pem: str, fail: Callable[[str], CdsError]) -> VerificationKey:
    data = pem.strip().encode()
    if b"PRIVATE KEY" in data:
        raise fail("this is a private key; configure the EHR's public key (never hold its private key)")
    try:
        if data.startswith(b"-----BEGIN CERTIFICATE-----"):
            public_key = x509.load_pem_x509_certificate(data).public_key()
        else:
            public_key = load_pem_public_key(data)
    except ValueError:
        raise fail("not a PEM public key or certificate (-----BEGIN PUBLIC KEY----- ...)") from None
    key = verification_key(public_key)
    if key is None:
        raise fail("only RSA and EC (P-256, P-384, P-521) public keys are supported")
    return key


# --- replay protection -----------------------------------------------------------------------------


class ReplayCache(Protocol):
    """Remembers (iss, jti) pairs until their tokens can no longer be accepted."""

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Record the pair; True the first time, False if it was already recorded and not yet expired.
        Raises AuthError(status=503) if the cache cannot answer."""
        ...


def _replay_key(issuer: str, jti: str) -> str:
    # A digest keeps entries small and fixed-size whatever the token carries.
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()


class InProcessReplayCache:
    """One process's replay window: thread-safe, entries dropped at their expiry, at most `max_entries`.

    With several gunicorn worker processes each would have its own window, so a token replayed to
    another worker would pass: the service uses SqliteReplayCache (shared by a host's workers) or
    RedisReplayCache instead; this one is for embedding the verifier in a single process.
    """

    def __init__(self, max_entries: int = 200_000, clock: Callable[[], float] = time.time):
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []     # heap, so expired entries leave in O(log n)
        self._lock = threading.Lock()

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        key = _replay_key(issuer, jti)
        with self._lock:
            now = self._clock()
            self._drop_expired(now)
            if key in self._expiry:
                return False
            if len(self._expiry) >= self.max_entries:
                # Dropping a live entry would reopen a replay window, so refuse instead.
                log.error("replay cache full (%d live entries); refusing tokens until some expire",
                          len(self._expiry))
                raise AuthError("replay protection is at capacity; retry shortly", status=503)
            self._expiry[key] = expires_at
            heapq.heappush(self._by_expiry, (expires_at, key))
            return True

    def _drop_expired(self, now: float) -> None:
        heap = self._by_expiry
        while heap and heap[0][0] <= now:
            expires_at, key = heapq.heappop(heap)
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]

    def __len__(self) -> int:
        with self._lock:
            self._drop_expired(self._clock())
            return len(self._expiry)


class RedisReplayCache:
    """A replay window shared by every replica: one `SET key 1 NX EXAT <expiry>` per token."""

    def __init__(self, client: Any, prefix: str = "pgx-cds:jti:"):
        self.client = client
        self.prefix = prefix

    @staticmethod
    def client_for(url: str, timeout: float = 1.0) -> Any:
        """A Redis client that fails fast: one immediate retry (a pooled connection may have gone stale
        after a Redis restart), not redis-py's default backoff, which would stall every call in an outage."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                    retry=Retry(NoBackoff(), 1))

    @classmethod
    def from_url(cls, url: str, prefix: str = "pgx-cds:jti:", timeout: float = 1.0) -> "RedisReplayCache":
        """Connect and ping now, so a wrong CDS_REDIS_URL stops start-up with a clear message."""
        import redis

        try:
            client = cls.client_for(url, timeout)
            client.ping()
        except ValueError as err:
            raise CdsError(f"CDS_REDIS_URL is not a Redis URL ({err})") from None
        except redis.RedisError as err:
            raise CdsError(f"CDS_REDIS_URL: cannot reach Redis for replay protection ({err})") from None
        return cls(client, prefix)

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        import redis

        try:
            stored = self.client.set(self.prefix + _replay_key(issuer, jti), 1, nx=True,
                                     exat=math.ceil(expires_at))
        except redis.RedisError as err:
            log.error("replay check failed, Redis unavailable: %s", err)
            raise AuthError("replay protection is unavailable; retry shortly", status=503) from None
        return bool(stored)


class SqliteReplayCache:
    """A replay window shared by every worker process of this host: one row per token in the local
    state file (cds.store.local_state). The default when no Redis is configured; replicas on other
    hosts need Redis."""

    def __init__(self, path: str | os.PathLike | None = None):
        from cds.store.local_state import LocalState, LocalStateUnavailable

        try:
            self.state = LocalState(path)
            self.state.check()
        except LocalStateUnavailable as err:
            raise CdsError(f"replay protection: cannot open the local state file ({err}); "
                           "set CDS_LOCAL_STATE to a writable path or CDS_REDIS_URL") from None

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        from cds.store.local_state import LocalStateUnavailable

        try:
            return self.state.first_use(_replay_key(issuer, jti), expires_at)
        except LocalStateUnavailable as err:
            log.error("replay check failed, local state file unavailable: %s", err)
            raise AuthError("replay protection is unavailable; retry shortly", status=503) from None


def replay_cache_from_env(environ: dict[str, str] | None = None, local_state: str | None = None) -> ReplayCache:
    """Redis when CDS_REDIS_URL is set (several replicas share one window), else the SQLite file that
    every worker process of this host shares (CDS_LOCAL_STATE)."""
    env = os.environ if environ is None else environ
    url = env.get("CDS_REDIS_URL", "").strip()
    if url:
        return RedisReplayCache.from_url(url)
    cache = SqliteReplayCache(local_state or env.get("CDS_LOCAL_STATE") or None)
    log.info("replay protection shared by this host's workers through %s (set CDS_REDIS_URL when "
             "replicas on several hosts serve the same EHR)", cache.state.path)
    return cache


# --- JWK Sets --------------------------------------------------------------------------------------


class _KeySetUnavailable(Exception):
    pass


def _download_jwks(url: str, timeout: float) -> dict[str, VerificationKey]:
    """GET a JWK Set; keys by kid. Redirects are not followed: only the allow-listed URL is trusted."""
    deadline = time.monotonic() + timeout
    try:
        with requests.get(url, timeout=timeout, stream=True, allow_redirects=False,
                          headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise _KeySetUnavailable(f"HTTP {response.status_code}")
            body = bytearray()
            while True:
                # read1: one socket read at a time (each bounded by `timeout`), so a server that
                # trickles its body is caught by the deadline instead of holding this thread.
                chunk = response.raw.read1(64 * 1024)
                if not chunk:
                    break
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _KeySetUnavailable("larger than 1 MiB")
                if time.monotonic() > deadline:
                    raise _KeySetUnavailable(f"took longer than {timeout:g} s")
    except requests.Timeout:
        raise _KeySetUnavailable(f"no answer within {timeout:g} s") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
        raise _KeySetUnavailable(type(err).__name__) from None
    try:
        document = json.loads(body)
    except ValueError:
        raise _KeySetUnavailable("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _KeySetUnavailable("not a JWK Set (no 'keys' list)")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        key = _jwk_key(jwk)
        if key is not None:
            keys[jwk["kid"]] = key
    return keys


def _jwk_key(jwk: Any) -> VerificationKey | None:
    """A signature key from one JWK, or None (no kid, not for signatures, a type we do not accept)."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("use", "sig") != "sig":
        return None
    declared = jwk.get("alg")
    if declared is not None and declared not in ACCEPTED_ALGORITHMS:
        return None
    try:
        if jwk.get("kty") == "RSA":
            public_key = RSAAlgorithm.from_jwk(jwk)
        elif jwk.get("kty") == "EC":
            public_key = ECAlgorithm.from_jwk(jwk)
        else:
            return None
    except (jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    if isinstance(public_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        # A published private key lets anyone sign as this EHR: the key is compromised, not usable.
        log.error("JWK Set publishes the private part of kid %s; that key is ignored", _shown(jwk["kid"]))
        return None
    return verification_key(public_key, declared)


class _KeySet:
    """One JWK Set URL's keys, cached; refetched when stale or when an unknown kid appears, rate-limited."""

    def __init__(self, url: str):
        self.url = url
        self.keys: dict[str, VerificationKey] = {}
        self.fetched_at: float | None = None     # monotonic time of the last successful fetch
        self.attempted_at: float | None = None   # monotonic time of the last attempt
        self.lock = threading.Lock()


# --- the verifier ----------------------------------------------------------------------------------


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
        self._key_sets = {url: _KeySet(url) for url in urls}

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
            log.warning("refused a token from an issuer that is not trusted: %s", _shown(iss))
            raise AuthError(f"issuer {_shown(iss)!r} is not trusted")
        if alg not in issuer.algorithms:
            raise AuthError(f"algorithm {alg} is not accepted from this issuer")

        key = self._key_for(issuer, header)
        algorithms = sorted(key.algorithms & issuer.algorithms)
        if alg not in algorithms:
            raise AuthError(f"algorithm {alg} does not fit the issuer's key {_shown(header['kid'])!r}")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=algorithms, audience=audience,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False, "verify_iss": False,
                         "enforce_minimum_key_length": True},
            )
        except jwt.InvalidSignatureError:
            log.warning("refused a token with a bad signature: iss=%s kid=%s", _shown(iss), _shown(header["kid"]))
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
            log.warning("refused a replayed token: iss=%s jti=%s", _shown(iss), _shown(jti))
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
            log.warning("refused a token whose jku is not allowed for %s: %s", _shown(issuer.iss), _shown(jku))
            raise AuthError("the token's jku is not on this issuer's allow-list")
        if issuer.public_key is not None:
            if issuer.kid is not None and kid != issuer.kid:
                raise AuthError(f"no key with kid {_shown(kid)!r} for this issuer")
            return issuer.public_key
        key_set = self._key_sets[jku or issuer.jwks_url]
        return self._key_from_set(key_set, kid)

    def _key_from_set(self, key_set: _KeySet, kid: str) -> VerificationKey:
        now = time.monotonic()
        fresh = key_set.fetched_at is not None and now - key_set.fetched_at < self.config.jwks_cache_seconds
        key = key_set.keys.get(kid)
        if key is not None and fresh:
            return key                                        # the per-request path: no lock, no I/O
        if not key_set.lock.acquire(timeout=self.http_timeout):
            raise AuthError("the issuer's key set could not be fetched in time")
        try:
            now = time.monotonic()
            fresh = key_set.fetched_at is not None and now - key_set.fetched_at < self.config.jwks_cache_seconds
            key = key_set.keys.get(kid)
            if key is not None and fresh:
                return key                                    # another thread fetched it meanwhile
            may_fetch = (key_set.attempted_at is None
                         or now - key_set.attempted_at >= self.config.jwks_min_refetch_seconds)
            if may_fetch:
                key_set.attempted_at = now
                try:
                    key_set.keys = self._fetch(key_set.url)
                    key_set.fetched_at = time.monotonic()
                    log.info("fetched JWK Set %s: %d signature keys", key_set.url, len(key_set.keys))
                except _KeySetUnavailable as err:
                    log.warning("could not fetch JWK Set %s: %s", key_set.url, err)
                    if kid not in key_set.keys:
                        raise AuthError("the issuer's key set could not be fetched") from None
                    # A stale copy still names this kid: better than refusing every call during an outage.
            elif key_set.fetched_at is None:
                raise AuthError("the issuer's key set could not be fetched")
        finally:
            key_set.lock.release()
        key = key_set.keys.get(kid)
        if key is None:
            raise AuthError(f"no key with kid {_shown(kid)!r} in the issuer's key set")
        return key

    def _fetch(self, url: str) -> dict[str, VerificationKey]:
        # In its own daemon thread, so the caller's wait is bounded by http_timeout however the server
        # misbehaves; a thread left behind (a server trickling its headers) holds nothing and ends with
        # its socket timeouts. Fetches are rate-limited per URL, so such threads are rare.
        outcome: list = []

        def download():
            try:
                outcome.append(_download_jwks(url, self.http_timeout))
            except _KeySetUnavailable as err:
                outcome.append(err)

        worker = threading.Thread(target=download, name="jwks-fetch", daemon=True)
        worker.start()
        worker.join(self.http_timeout)
        if not outcome:
            raise _KeySetUnavailable(f"no complete answer within {self.http_timeout:g} s")
        if isinstance(outcome[0], _KeySetUnavailable):
            raise outcome[0]
        return outcome[0]


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
        raise AuthError(f"alg {_shown(alg)!r} is not allowed: CDS Hooks forbids symmetric (shared-secret) "
                        "signatures; sign with ES384 or RS384")
    if alg not in ACCEPTED_ALGORITHMS:
        raise AuthError(f"alg {_shown(alg)!r} is not accepted; use ES384 or RS384")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        raise AuthError("the token header must have typ 'JWT'")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("the token header has no 'kid'")
    return alg
