"""JWK Sets: fetched only from allow-listed URLs, bounded in time and size, cached and rate-limited.

PyJWT's `PyJWKClient` is not used: it fetches any URL it is given, has no overall time bound, and binds
one algorithm to a key without `alg` (RSA → RS256 only).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import jwt
import requests
import urllib3
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds.service.auth.errors import AuthError, shown
from cds.service.auth.keys import ACCEPTED_ALGORITHMS, VerificationKey, verification_key

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024


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
    public_key: Any
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
        log.error("JWK Set publishes the private part of kid %s; that key is ignored", shown(jwk["kid"]))
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


class KeySets:
    """The JWK Sets of every allow-listed URL (known at start-up, so a token can only pick among them)."""

    def __init__(self, urls: set[str], *, cache_seconds: float, min_refetch_seconds: float, http_timeout: float):
        self._sets = {url: _KeySet(url) for url in urls}
        self.cache_seconds = cache_seconds              # a JWK Set is refetched after this long
        self.min_refetch_seconds = min_refetch_seconds  # at most one fetch per key set in this interval
        self.http_timeout = http_timeout

    def key(self, url: str, kid: str) -> VerificationKey:
        """The key `kid` of the JWK Set at `url` (an allow-listed URL), fetching the set if needed."""
        key_set = self._sets[url]
        now = time.monotonic()
        fresh = key_set.fetched_at is not None and now - key_set.fetched_at < self.cache_seconds
        key = key_set.keys.get(kid)
        if key is not None and fresh:
            return key                                        # the per-request path: no lock, no I/O
        if not key_set.lock.acquire(timeout=self.http_timeout):
            raise AuthError("the issuer's key set could not be fetched in time")
        try:
            now = time.monotonic()
            fresh = key_set.fetched_at is not None and now - key_set.fetched_at < self.cache_seconds
            key = key_set.keys.get(kid)
            if key is not None and fresh:
                return key                                    # another thread fetched it meanwhile
            may_fetch = (key_set.attempted_at is None
                         or now - key_set.attempted_at >= self.min_refetch_seconds)
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
            raise AuthError(f"no key with kid {shown(kid)!r} in the issuer's key set")
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
