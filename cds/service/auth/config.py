"""The trusted-issuer allow-list (CDS_TRUSTED_ISSUERS), read and validated once at start-up.

"CDS Services SHOULD maintain an allowlist of the `iss` and `jku` fields to only the CDS Clients they
trust" (CDS Hooks 2.0): each issuer is configured with its JWK Set URL or a pinned public key.

The file's schema is the pydantic models below (as the knowledge files' are, cds/knowledge/models.py):
every model forbids unknown fields, so a misspelt key is an error with its file and line, never a
silently ignored setting. `AuthConfig` and `TrustedIssuer` are what the verifier uses at run time.
"""
from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from cds.errors import CdsError
from cds.knowledge.yamlsrc import SourceMap, YamlSourceError, load_yaml_text
from cds.service.auth.keys import ACCEPTED_ALGORITHMS, VerificationKey, verification_key

EXAMPLE = "config/trusted-issuers.example.yaml"


# --- what the verifier uses ------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
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
    def from_env(cls, environ: dict[str, str] | None = None) -> AuthConfig:
        """CDS_AUTH (required | off) and CDS_TRUSTED_ISSUERS (path to the YAML allow-list)."""
        env = os.environ if environ is None else environ
        return cls.configured(env.get("CDS_AUTH", "required"), env.get("CDS_TRUSTED_ISSUERS", ""))

    @classmethod
    def configured(cls, auth_mode: str, trusted_issuers: str | Path | None) -> AuthConfig:
        """The configuration for CDS_AUTH and CDS_TRUSTED_ISSUERS as the service's settings hold them."""
        mode = auth_mode.strip().lower() or "required"
        if mode not in ("required", "off"):
            raise CdsError(f"CDS_AUTH={mode!r}: use 'required' or 'off' (development only)")
        if mode == "off":
            return cls(required=False, source="CDS_AUTH=off")
        path = str(trusted_issuers or "").strip()
        if not path:
            raise CdsError("CDS_AUTH=required needs CDS_TRUSTED_ISSUERS=<path to trusted-issuers.yaml> "
                           "(see docs/security.md), or CDS_AUTH=off for development")
        return cls.from_yaml(Path(path))

    @classmethod
    def from_yaml(cls, path: Path) -> AuthConfig:
        """Load and validate the allow-list; every problem is a CdsError naming the file, line and field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or err
            raise CdsError(f"{path}: cannot read the trusted issuers file ({reason})") from None
        try:
            data, lines = load_yaml_text(text, str(path))
        except YamlSourceError as err:
            raise CdsError("\n".join(map(str, err.diagnostics))) from None
        if not isinstance(data, dict):
            raise CdsError(f"{path}:1: expected a mapping with an 'issuers' list (see {EXAMPLE})")
        try:
            allow_list = AllowListFile.model_validate(data)
        except ValidationError as err:
            raise CdsError("\n".join(_problem(lines, data, e) for e in err.errors())) from None
        return allow_list.config(path, lines)


# --- the file's schema -----------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _key_set_url(url: str) -> str:
    """https only (the spec requires TLS), except plain http to this machine for local testing."""
    parts = urlsplit(url)
    if parts.hostname and (parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname))):
        return url
    raise ValueError(f"{url!r} must be an https:// URL (plain http only to localhost)")


def _fhir_base_url(url: str) -> str:
    base = normalised_base_url(url)
    if base is None:
        raise ValueError(f"{url!r} is not an http(s) base URL such as https://ehr.example.org/fhir")
    return base


def _accepted_algorithm(alg: str) -> str:
    if alg not in ACCEPTED_ALGORITHMS:
        raise ValueError(f"algorithm {alg!r} is not accepted: CDS Hooks forbids 'none' and symmetric (HS*) "
                         f"algorithms; use one of {', '.join(sorted(ACCEPTED_ALGORITHMS))}")
    return alg


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
        raise ValueError(f"must be a number of seconds ≥ 0, not {value!r}")
    return float(value)


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


KeySetUrl = Annotated[str, AfterValidator(_key_set_url)]
FhirBaseUrl = Annotated[str, AfterValidator(_fhir_base_url)]
Algorithm = Annotated[str, AfterValidator(_accepted_algorithm)]
Seconds = Annotated[float, BeforeValidator(_seconds)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IssuerEntry(_Strict):
    """One item of `issuers:`, as written in the file."""

    iss: str = Field(min_length=1, pattern=r"\S",
                     description="the issuer URI exactly as it appears in the EHR's tokens")
    jwks_url: KeySetUrl | None = None
    public_key: str | None = Field(None, description="PEM text")
    public_key_file: str | None = Field(None, description="a path, relative to this file")
    kid: str | None = Field(None, min_length=1)
    jku: Annotated[list[KeySetUrl], BeforeValidator(_one_or_list)] = Field(
        default_factory=list, description="the JWK Set URLs its tokens may name")
    algorithms: list[Algorithm] | None = Field(None, min_length=1,
                                               description="a non-empty list such as [ES384, RS384]")
    fhir_servers: Annotated[list[FhirBaseUrl], BeforeValidator(_one_or_list)] = Field(
        default_factory=list, description="the FHIR base URLs this EHR's calls may name")

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerEntry:
        given = [name for name in ("jwks_url", "public_key", "public_key_file") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'jwks_url', 'public_key' (PEM text) or 'public_key_file'"
                             + (f"; found {', '.join(given)}" if given else ""))
        if self.kid is not None and self.jwks_url is not None:
            raise ValueError("'kid' is only for a pinned public_key, and must be a non-empty string")
        return self

    def trusted_issuer(self, base: Path) -> TrustedIssuer:
        """The run-time issuer; a pinned key is read (from `base`, the allow-list's folder) and checked here."""
        allowed = ACCEPTED_ALGORITHMS if self.algorithms is None else frozenset(self.algorithms)
        key = None if self.jwks_url is not None else self._pinned_key(base)
        if key is not None and not (key.algorithms & allowed):
            raise ValueError(f"the public key can only verify {', '.join(sorted(key.algorithms))}, "
                             "none of which is in 'algorithms'")
        return TrustedIssuer(iss=self.iss, jwks_url=self.jwks_url, public_key=key, kid=self.kid,
                             allowed_jku=frozenset(self.jku), algorithms=allowed,
                             fhir_servers=frozenset(self.fhir_servers))

    def _pinned_key(self, base: Path) -> VerificationKey:
        if self.public_key is not None:
            return _load_pem(self.public_key, "public_key")
        key_file = base / (self.public_key_file or "")
        try:
            pem = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or err
            raise ValueError(f"cannot read public_key_file {str(key_file)!r} ({reason})") from None
        return _load_pem(pem, f"public_key_file {str(key_file)!r}")


class AllowListFile(_Strict):
    """The whole file (config/trusted-issuers.example.yaml shows every field)."""

    issuers: list[IssuerEntry] = Field(min_length=1, description="a non-empty list of trusted EHRs")
    clock_skew_seconds: Seconds = 60.0
    max_token_lifetime_seconds: Seconds = 3600.0
    jwks_cache_seconds: Seconds = 3600.0
    jwks_min_refetch_seconds: Seconds = 30.0

    def config(self, path: Path, lines: SourceMap) -> AuthConfig:
        issuers: dict[str, TrustedIssuer] = {}
        for index, entry in enumerate(self.issuers):
            where = f"{path}:{lines.line(('issuers', index))}: issuers[{index}] (iss {entry.iss!r})"
            if entry.iss in issuers:
                raise CdsError(f"{where}: iss {entry.iss!r} is listed twice")
            try:
                issuers[entry.iss] = entry.trusted_issuer(path.parent)
            except ValueError as err:
                raise CdsError(f"{where}: {err}") from None
        return AuthConfig(issuers=issuers, required=True, clock_skew=self.clock_skew_seconds,
                          max_token_lifetime=self.max_token_lifetime_seconds,
                          jwks_cache_seconds=self.jwks_cache_seconds,
                          jwks_min_refetch_seconds=self.jwks_min_refetch_seconds, source=str(path))


def _problem(lines: SourceMap, data: dict, error: Any) -> str:
    """One pydantic error as `file:line: issuers[0] (iss '…'): field: what is wrong`."""
    loc = tuple(part for part in error["loc"] if isinstance(part, int) or not _is_branch_name(part))
    line = lines.line(loc)
    about_the_field = _ABOUT_THE_FIELD.get(error["type"])
    if about_the_field is not None:      # the message names the field: it is placed at its parent
        loc, message = loc[:-1], about_the_field(_Field.at(loc))
    elif error["type"] == "model_type":
        message = "each issuer must be a mapping with 'iss' and 'jwks_url' or 'public_key'"
    else:
        message = error["msg"].removeprefix("Value error, ")
    return f"{lines.file}:{line}: {_place(loc, data)}{message}"


@dataclass(frozen=True)
class _Field:
    """The field an error is about, as the schema describes it."""

    name: str
    model: type[BaseModel]

    @classmethod
    def at(cls, loc: tuple) -> _Field:
        model: type[BaseModel] = IssuerEntry if loc[:1] == ("issuers",) and len(loc) > 2 else AllowListFile
        return cls(str(loc[-1]) if loc else "", model)

    @property
    def description(self) -> str:
        known = self.model.model_fields.get(self.name)
        return known.description or "" if known is not None else ""

    @property
    def described(self) -> str:
        return f"{self.name!r}" + (f" ({self.description})" if self.description else "")

    @property
    def expected(self) -> str:
        return ", ".join(sorted(self.model.model_fields))


_ABOUT_THE_FIELD: dict[str, Callable[[_Field], str]] = {
    "extra_forbidden": lambda f: f"unknown field {f.name!r} (expected one of {f.expected})",
    "missing": lambda f: f"{f.described} is required",
    "string_too_short": lambda f: f"{f.described} must not be empty",
    "string_pattern_mismatch": lambda f: f"{f.described} must not be empty",
    "too_short": lambda f: f"{f.name!r} must be {f.description or 'non-empty'}",
}


def _is_branch_name(part: str) -> bool:
    """pydantic's names for a union branch or validator in an error's location (not the author's keys)."""
    return "[" in part or part.startswith("function-")


def _place(loc: tuple, data: dict) -> str:
    """issuers[0] (iss 'https://…'): jku[1]: — where in the file, named as its author wrote it."""
    parts = []
    if len(loc) >= 2 and loc[0] == "issuers" and isinstance(loc[1], int):
        parts.append(f"issuers[{loc[1]}]{_issuer_name(data, loc[1])}")
        loc = loc[2:]
    if loc:
        parts.append("".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip("."))
    return "".join(f"{p}: " for p in parts)


def _issuer_name(data: dict, index: int) -> str:
    entries = data.get("issuers")
    entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
    iss = entry.get("iss") if isinstance(entry, dict) else None
    return f" (iss {iss!r})" if isinstance(iss, str) and iss else ""


# --- helpers the service's FHIR-server policy shares -----------------------------------------------


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


def _load_pem(pem: str, origin: str) -> VerificationKey:
    data = pem.strip().encode()
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{origin}: this is a private key; configure the EHR's public key "
                         "(never hold its private key)")
    public_key: Any
    try:
        if data.startswith(b"-----BEGIN CERTIFICATE-----"):
            public_key = x509.load_pem_x509_certificate(data).public_key()
        else:
            public_key = load_pem_public_key(data)
    except ValueError:
        raise ValueError(f"{origin}: not a PEM public key or certificate (-----BEGIN PUBLIC KEY----- ...)") from None
    key = verification_key(public_key)
    if key is None:
        raise ValueError(f"{origin}: only RSA and EC (P-256, P-384, P-521) public keys are supported")
    return key
