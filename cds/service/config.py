"""Service settings, read from the environment once at start-up (see README: Configuration)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cds.errors import CdsError


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise CdsError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise CdsError(f"{name} must be positive")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise CdsError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise CdsError(f"{name} must be positive")
    return value


def _flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise CdsError(f"{name}={raw!r}: use true or false")


@dataclass
class Settings:
    knowledge_dir: Path | None = None           # CDS_KNOWLEDGE_DIR; default: the bundled knowledge
    auth_mode: str = "required"                 # CDS_AUTH: required | off (development only)
    base_url: str | None = None                 # CDS_BASE_URL: our public URL; JWT `aud` is {base_url}/cds-services/{id}
    database_url: str | None = None             # DATABASE_URL; default SQLite under ./var/
    fhir_timeout: float = 2.0                   # CDS_FHIR_TIMEOUT: seconds per FHIR request
    fhir_budget: float = 4.0                    # CDS_FHIR_BUDGET: seconds for all FHIR requests of one call
    fhir_connect_timeout: float = 2.0           # CDS_FHIR_CONNECT_TIMEOUT: seconds to open a connection
    fhir_max_bytes: int = 8 * 1024 * 1024       # CDS_FHIR_MAX_BYTES: largest FHIR response accepted
    fhir_per_origin: int = 4                    # CDS_FHIR_MAX_PER_ORIGIN: requests in flight to one FHIR server, per worker
    require_consent: bool = False               # CDS_REQUIRE_CONSENT: use genomic data only under a permit
    cors_origins: list[str] = field(default_factory=lambda: ["*"])   # CDS_CORS_ORIGINS, comma-separated
    admin_token: str | None = None              # CDS_ADMIN_TOKEN: bearer token for /admin and /workbench
    metrics_token: str | None = None            # CDS_METRICS_TOKEN: bearer token /metrics asks for, when set
    audit: bool = True                          # CDS_AUDIT: false disables the database (tests, benchmarks)
    max_body_bytes: int = 10 * 1024 * 1024      # CDS_MAX_BODY_BYTES: larger request bodies get 413
    fhir_private_networks: str = ""             # CDS_FHIR_PRIVATE_NETWORKS: CIDRs a fhirServer may resolve into
    local_state: str | None = None              # CDS_LOCAL_STATE: SQLite file shared by this host's workers
    session_minutes: float = 60.0               # CDS_SESSION_MINUTES: workbench login lifetime
    login_attempts: int = 5                     # CDS_LOGIN_ATTEMPTS: failed workbench logins per client per 5 min

    def __post_init__(self):
        if self.auth_mode != "off" and not self.base_url:
            # Without it the JWT audience would come from the Host header, which the caller controls.
            raise CdsError("CDS_AUTH=required needs CDS_BASE_URL, the public URL the EHR calls (e.g. "
                           "https://cds.hospital.example.org): a token's aud must name {CDS_BASE_URL}/cds-services/{id}")
        if self.base_url:
            from urllib.parse import urlsplit

            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise CdsError(f"CDS_BASE_URL={self.base_url!r} must be an http(s) URL such as https://cds.example.org")
            self.base_url = self.base_url.rstrip("/")

    @classmethod
    def from_env(cls) -> "Settings":
        auth = os.environ.get("CDS_AUTH", "required").strip().lower()
        if auth not in ("required", "off"):
            raise CdsError(f"CDS_AUTH={auth!r}: use 'required' or 'off'")
        origins = [o.strip() for o in os.environ.get("CDS_CORS_ORIGINS", "*").split(",") if o.strip()]
        knowledge = os.environ.get("CDS_KNOWLEDGE_DIR")
        return cls(
            knowledge_dir=Path(knowledge) if knowledge else None,
            auth_mode=auth,
            base_url=(os.environ.get("CDS_BASE_URL") or None),
            database_url=os.environ.get("DATABASE_URL") or None,
            fhir_timeout=env_float("CDS_FHIR_TIMEOUT", 2.0),
            fhir_budget=env_float("CDS_FHIR_BUDGET", 4.0),
            fhir_connect_timeout=env_float("CDS_FHIR_CONNECT_TIMEOUT", 2.0),
            fhir_max_bytes=env_int("CDS_FHIR_MAX_BYTES", 8 * 1024 * 1024),
            fhir_per_origin=env_int("CDS_FHIR_MAX_PER_ORIGIN", 4),
            require_consent=_flag("CDS_REQUIRE_CONSENT"),
            cors_origins=origins or ["*"],
            admin_token=os.environ.get("CDS_ADMIN_TOKEN") or None,
            metrics_token=os.environ.get("CDS_METRICS_TOKEN") or None,
            audit=_flag("CDS_AUDIT", True),
            max_body_bytes=env_int("CDS_MAX_BODY_BYTES", 10 * 1024 * 1024),
            fhir_private_networks=os.environ.get("CDS_FHIR_PRIVATE_NETWORKS", ""),
            local_state=os.environ.get("CDS_LOCAL_STATE") or None,
            session_minutes=env_float("CDS_SESSION_MINUTES", 60.0),
            login_attempts=env_int("CDS_LOGIN_ATTEMPTS", 5),
        )
