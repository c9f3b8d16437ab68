"""The trusted-issuer allow-list (CDS_TRUSTED_ISSUERS), read and validated once at start-up.

"CDS Services SHOULD maintain an allowlist of the `iss` and `jku` fields to only the CDS Clients they
trust" (CDS Hooks 2.0): each issuer is configured with its JWK Set URL or a pinned public key.
"""
from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from cds.errors import CdsError
from cds.service.auth.keys import ACCEPTED_ALGORITHMS, VerificationKey, verification_key


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
