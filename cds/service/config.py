"""Service settings, read from the environment once at start-up (see README: Configuration).

`env_float`/`env_int` remain for the gunicorn worker, which gunicorn builds before any app exists (its
client timeout and body limit)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode

from cds.errors import CdsError
from cds.settings import CoreSettings


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


class Settings(CoreSettings):
    """The service's settings: the core's (cds.settings) and what only the service reads. `from_env()`
    is called once, by the app factory (or `cds serve`), and the app hands the values down."""

    auth_mode: Literal["required", "off"] = Field("required", validation_alias="CDS_AUTH")  # off: development only
    base_url: str | None = Field(None, validation_alias="CDS_BASE_URL")  # JWT `aud` is {base_url}/cds-services/{id}
    fhir_timeout: float = Field(2.0, gt=0, validation_alias="CDS_FHIR_TIMEOUT")       # seconds per FHIR request
    fhir_budget: float = Field(4.0, gt=0, validation_alias="CDS_FHIR_BUDGET")         # seconds for a call's requests
    fhir_connect_timeout: float = Field(2.0, gt=0, validation_alias="CDS_FHIR_CONNECT_TIMEOUT")
    fhir_max_bytes: int = Field(8 * 1024 * 1024, gt=0, validation_alias="CDS_FHIR_MAX_BYTES")  # largest response
    fhir_per_origin: int = Field(4, gt=0, validation_alias="CDS_FHIR_MAX_PER_ORIGIN")  # in flight per server, worker
    require_consent: bool = Field(False, validation_alias="CDS_REQUIRE_CONSENT")  # genomic data only under a permit
    cors_origins: Annotated[list[str], NoDecode] = Field(["*"], validation_alias="CDS_CORS_ORIGINS")  # comma-separated
    admin_token: str | None = Field(None, validation_alias="CDS_ADMIN_TOKEN", repr=False)  # /admin and /workbench
    metrics_token: str | None = Field(None, validation_alias="CDS_METRICS_TOKEN", repr=False)  # /metrics, when set
    audit: bool = Field(True, validation_alias="CDS_AUDIT")        # false disables the database (tests, benchmarks)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0, validation_alias="CDS_MAX_BODY_BYTES")  # larger: 413
    fhir_private_networks: str = Field("", validation_alias="CDS_FHIR_PRIVATE_NETWORKS")  # CIDRs a fhirServer may use
    session_minutes: float = Field(60.0, gt=0, validation_alias="CDS_SESSION_MINUTES")   # workbench login lifetime
    login_attempts: int = Field(5, gt=0, validation_alias="CDS_LOGIN_ATTEMPTS")  # failed logins per client per 5 min
    smart_secret: str | None = Field(None, validation_alias="CDS_SMART_SECRET", repr=False)  # SMART page's cookies
    smart_issuers: Annotated[list[str], NoDecode] = Field([], validation_alias="CDS_SMART_ISSUERS")  # comma-separated
    smart_client_id: str = Field("pgx-cds", validation_alias="CDS_SMART_CLIENT_ID")
    policy_poll: float = Field(2.0, gt=0, validation_alias="CDS_POLICY_POLL")  # seconds between active-version reads
    trusted_issuers: Path | None = Field(None, validation_alias="CDS_TRUSTED_ISSUERS")  # the issuers' allow-list
    redis_url: str | None = Field(None, validation_alias="CDS_REDIS_URL", repr=False)  # a replay window for replicas
    smart_frame_ancestors: Annotated[list[str], NoDecode] = Field([], validation_alias="CDS_SMART_FRAME_ANCESTORS")

    @field_validator("auth_mode", mode="before")
    @classmethod
    def _one_word(cls, value: Any, info: ValidationInfo) -> Any:
        word = value.strip().lower() if isinstance(value, str) else value
        allowed = ("required", "off")
        if word not in allowed:
            raise ValueError(f"{value!r}: use {' or '.join(repr(a) for a in allowed)}")
        return word

    @field_validator("cors_origins", "smart_issuers", "smart_frame_ancestors", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _base_url_named(self) -> Self:
        self.cors_origins = self.cors_origins or ["*"]
        self.smart_issuers = [i.rstrip("/") for i in self.smart_issuers]
        if self.auth_mode != "off" and not self.base_url:
            # Without it the JWT audience would come from the Host header, which the caller controls.
            raise CdsError("CDS_AUTH=required needs CDS_BASE_URL, the public URL the EHR calls (e.g. "
                           "https://cds.hospital.example.org): a token's aud must name "
                           "{CDS_BASE_URL}/cds-services/{id}")
        if self.base_url:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise CdsError(f"CDS_BASE_URL={self.base_url!r} must be an http(s) URL such as https://cds.example.org")
            self.base_url = self.base_url.rstrip("/")
        return self
