"""Single sign-on to the workbench with the hospital's OpenID Connect provider (authorization code flow
with PKCE, Authlib as the client).

The login under way (state, nonce, PKCE verifier) is kept in the database, so the callback may land on
any worker or replica; the state also goes into a cookie bound to this browser, so a callback carrying
someone else's code is refused. The ID token is verified by Authlib: signature against the provider's
JWKS, issuer, audience, expiry, nonce, at_hash.

Configuration (environment):
    CDS_OIDC_ISSUER           the provider's issuer URL (its /.well-known/openid-configuration is read)
    CDS_OIDC_CLIENT_ID        this workbench's client id at the provider
    CDS_OIDC_CLIENT_SECRET    its secret (client_secret_basic); empty for a public client
    CDS_OIDC_REDIRECT_URL     the callback URL registered at the provider (default: CDS_BASE_URL, or the
                              address the browser used, + /workbench/login/sso/callback)
    CDS_OIDC_USERNAME_CLAIM   the claim that names the account (default preferred_username, then email, then sub)
    CDS_OIDC_ROLE_CLAIM       a claim listing the person's groups or roles (optional)
    CDS_OIDC_ROLE_MAP         which claim value gives which role: "pgx-approvers=approver,pgx-authors=author"
                              (a value equal to a role name gives that role); the highest wins
    CDS_OIDC_LABEL            the button's text (default "Sign in with the hospital account")
Without a role claim, a person signs in only to an account an admin created for them (`cds user add
NAME --role ROLE --sso ISSUER`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.base_client import FrameworkIntegration
from authlib.integrations.base_client.sync_app import BaseApp, OAuth2Mixin
from authlib.integrations.base_client.sync_openid import OpenIDMixin
from authlib.integrations.requests_client import OAuth2Session
from pydantic import Field

from cds.errors import CdsError
from cds.policy.accounts import ROLES
from cds.settings import EnvironmentSettings

CALLBACK_PATH = "/workbench/login/sso/callback"


class _Integration(FrameworkIntegration):
    """Authlib's hook for storing tokens in a framework session: the workbench keeps none (the ID token is
    read once, at login)."""

    def update_token(self, token, refresh_token=None, access_token=None) -> None:
        return None


class _Client(OAuth2Mixin, OpenIDMixin, BaseApp):
    client_cls = OAuth2Session


@dataclass
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str | None = None
    redirect_url: str | None = None
    username_claim: str = "preferred_username"
    role_claim: str | None = None
    role_map: dict[str, str] = field(default_factory=dict)
    label: str = "Sign in with the hospital account"

    @classmethod
    def from_env(cls) -> OidcConfig | None:
        """The provider the environment names (CDS_OIDC_*, read through OidcSettings), or None."""
        return cls.from_settings(OidcSettings.from_env())

    @classmethod
    def from_settings(cls, settings: OidcSettings) -> OidcConfig | None:
        issuer = settings.issuer.strip()
        if not issuer:
            return None
        client_id = settings.client_id.strip()
        if not client_id:
            raise CdsError("CDS_OIDC_ISSUER is set but CDS_OIDC_CLIENT_ID is not")
        return cls(issuer.rstrip("/"), client_id, settings.client_secret or None, settings.redirect_url or None,
                   settings.username_claim or "preferred_username", settings.role_claim or None,
                   parse_role_map(settings.role_map), settings.label or "Sign in with the hospital account")


class OidcSettings(EnvironmentSettings):
    """The workbench's single sign-on, as the environment configures it (README: Configuration)."""

    issuer: str = Field("", validation_alias="CDS_OIDC_ISSUER")
    client_id: str = Field("", validation_alias="CDS_OIDC_CLIENT_ID")
    client_secret: str | None = Field(None, validation_alias="CDS_OIDC_CLIENT_SECRET", repr=False)
    redirect_url: str | None = Field(None, validation_alias="CDS_OIDC_REDIRECT_URL")
    username_claim: str | None = Field(None, validation_alias="CDS_OIDC_USERNAME_CLAIM")
    role_claim: str | None = Field(None, validation_alias="CDS_OIDC_ROLE_CLAIM")
    role_map: str = Field("", validation_alias="CDS_OIDC_ROLE_MAP")
    label: str | None = Field(None, validation_alias="CDS_OIDC_LABEL")


def parse_role_map(text: str) -> dict[str, str]:
    out = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        value, _, role = item.partition("=")
        if role.strip() not in ROLES:
            raise CdsError(f"CDS_OIDC_ROLE_MAP: {item!r} must be VALUE=ROLE with ROLE one of {', '.join(ROLES)}")
        out[value.strip()] = role.strip()
    return out


@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    username: str
    display_name: str | None
    role: str | None              # from the role claim; None: the account's own role decides


class OidcClient:
    def __init__(self, config: OidcConfig):
        self.config = config
        self._client = _Client(_Integration("pgx-workbench"), name="pgx-workbench", client_id=config.client_id,
                               client_secret=config.client_secret,
                               server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
                               client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256",
                                              "timeout": 10})

    def redirect_url(self, base: str) -> str:
        return self.config.redirect_url or base.rstrip("/") + CALLBACK_PATH

    def start(self, redirect_url: str) -> dict[str, str]:
        """The provider's authorization URL, with the state, nonce and PKCE verifier to keep until the callback."""
        return self._client.create_authorization_url(redirect_url)

    def finish(self, code: str, redirect_url: str, nonce: str, code_verifier: str) -> Identity:
        """Exchange the code (with the PKCE verifier) and verify the ID token; raises on any failure."""
        token = self._client.fetch_access_token(redirect_url, code=code, code_verifier=code_verifier)
        claims = self._client.parse_id_token(token, nonce=nonce)
        if claims is None:
            raise CdsError("the provider returned no ID token")
        if claims.get("iss") != self._client.load_server_metadata().get("issuer"):
            raise CdsError("the ID token was issued by another provider")
        return Identity(claims["iss"], str(claims["sub"]), self._username(claims),
                        claims.get("name") if isinstance(claims.get("name"), str) else None, self._role(claims))

    def _username(self, claims: dict[str, Any]) -> str:
        for key in (self.config.username_claim, "preferred_username", "email", "sub"):
            value = claims.get(key)
            if isinstance(value, str) and value:
                return value
        return str(claims["sub"])

    def _role(self, claims: dict[str, Any]) -> str | None:
        if not self.config.role_claim:
            return None
        values = claims.get(self.config.role_claim) or []
        values = [values] if isinstance(values, str) else [v for v in values if isinstance(v, str)]
        roles = [self.config.role_map.get(v, v) for v in values]
        granted = [r for r in roles if r in ROLES]
        return max(granted, key=ROLES.index) if granted else None
