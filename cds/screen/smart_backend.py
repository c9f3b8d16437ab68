"""SMART Backend Services authorisation for the Bulk Data client (HL7 SMART App Launch 2.x,
"Backend Services" with "Client Authentication: Asymmetric (public key)").

What the specification asks, and what this module does:

- Discovery: the FHIR server publishes `[base]/.well-known/smart-configuration` with `token_endpoint`
  → read from the FHIR base with no credential and no redirect (the token endpoint must come from the
  FHIR server itself); `--token-endpoint` skips it. Where the document lists
  `token_endpoint_auth_methods_supported` or `token_endpoint_auth_signing_alg_values_supported`, a
  server that does not take `private_key_jwt` or our algorithm is told apart before anything is sent.
- The client assertion is a JWT signed with the client's registered private key: header `alg`
  (RS384 or ES384, the two every SMART server supports), `kid` (required: the key's id in the JWK
  Set registered at the EHR), `typ: JWT`; claims `iss` = `sub` = client_id, `aud` = the token
  endpoint URL, `exp` no more than five minutes ahead, `jti` unique per assertion. PyJWT signs it.
- Token request: `POST` form `grant_type=client_credentials`, `scope`,
  `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, `client_assertion`
  → the answer's `access_token` is used as a bearer token; `expires_in` says when to get another
  (a fresh assertion each time: backend services get no refresh token).
- Errors (RFC 6749 §5.2: `error`, `error_description`) become one sentence naming the token endpoint,
  the status and what the server said; nothing is retried blindly.

The access token goes only to the FHIR server (bulk.py checks the origin of every request it
authorises); the assertion goes only to the token endpoint, which must be https (plain http only to
this machine, for tests). Token endpoint answers are read up to 1 MiB.
"""
from __future__ import annotations

import ipaddress
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds.errors import CdsError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# "no more than five minutes in the future": a little less, so a server whose clock is behind ours
# by up to half a minute still accepts it.
ASSERTION_LIFETIME = 270
MAX_ANSWER_BYTES = 1 << 20
MIN_RSA_BITS = 2048                       # NIST SP 800-131A; the service asks the same of EHR keys
RENEW_MARGIN = 60.0                       # get a new token this long before the old one expires (at most)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_tls(url: str, what: str) -> str:
    """A credential travels over https only (plain http to this machine, for local testing)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return url
    raise CdsError(f"{what} {url!r} must be an https:// URL (plain http only to localhost): "
                   "a credential is sent to it")


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port made explicit: what "the same server" means."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def fhir_base(url: str) -> str:
    """The FHIR base of a Bulk Data URL: `https://x/fhir/Group/7/$export` → `https://x/fhir`."""
    base = url.split("?", 1)[0].rstrip("/")
    base = re.sub(r"/\$export$", "", base)
    return re.sub(r"/(Patient|Group/[^/]+)$", "", base)


@dataclass(frozen=True)
class ClientKey:
    """The client's private key and the algorithm it signs with."""

    key: Any
    algorithm: str
    key_id: str


def load_client_key(path: str | Path, key_id: str, passphrase: str | None = None) -> ClientKey:
    """A PEM private key (PKCS#8 or traditional; encrypted ones with `passphrase`): RSA of at least
    2048 bits signs RS384, EC P-384 signs ES384."""
    if not key_id:
        raise CdsError("SMART Backend Services needs --key-id (or $CDS_BULK_KEY_ID): the kid of the key "
                       "registered for this client at the EHR")
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CdsError(f"the private key {path} cannot be read: {err.strerror or err}") from None
    if b"PRIVATE KEY" not in data:
        kind = "a public key or certificate" if re.search(rb"PUBLIC KEY|CERTIFICATE", data) else "not a PEM private key"
        raise CdsError(f"the private key {path} is {kind}: give the client's PEM private key "
                       "(the EHR holds the public key)")
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError:
        raise CdsError(f"the private key {path} is encrypted: set $CDS_BULK_PRIVATE_KEY_PASSPHRASE") from None
    except ValueError as err:
        raise CdsError(f"the private key {path} cannot be loaded ({err}); a wrong passphrase gives this too") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise CdsError(f"the RSA key {path} has {key.key_size} bits; use at least {MIN_RSA_BITS}")
        return ClientKey(key, "RS384", key_id)
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return ClientKey(key, "ES384", key_id)
    name = key.curve.name if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__
    raise CdsError(f"the private key {path} is {name}; SMART Backend Services keys here are RSA (RS384) "
                   "or EC P-384 (ES384), the algorithms every SMART server supports")


def default_scope(resource_types: tuple[str, ...], configuration: dict[str, Any]) -> str:
    """Read access to the exported types: SMART v2 scopes (`system/Patient.rs`), or v1
    (`system/Patient.read`) for a server that advertises permission-v1 and not permission-v2."""
    capabilities = configuration.get("capabilities")
    capabilities = capabilities if isinstance(capabilities, list) else []
    suffix = "read" if "permission-v1" in capabilities and "permission-v2" not in capabilities else "rs"
    return " ".join(f"system/{kind}.{suffix}" for kind in resource_types)


def _read_json(response: requests.Response, what: str) -> Any:
    body = bytearray()
    with response:
        for block in response.iter_content(64 * 1024):
            body += block
            if len(body) > MAX_ANSWER_BYTES:
                raise CdsError(f"{what} answered more than {MAX_ANSWER_BYTES} bytes; not read")
    try:
        return orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        text = " ".join(body[:300].decode("utf-8", "replace").split())
        raise CdsError(f"{what} answered {response.status_code} with no JSON: {text or response.reason}") from None


def _said(value: Any) -> str:
    """A server-supplied string, on one line and cut: it ends up in a terminal."""
    return " ".join(str(value).split())[:300]


class BackendServicesToken:
    """Access tokens for one client at one FHIR server, obtained when first needed and again when
    the last one is about to expire (or the server refused it: `expire`). Thread-safe."""

    renewable = True

    def __init__(self, fhir_url: str, client_id: str, key: ClientKey, *, scope: str | None = None,
                 token_endpoint: str | None = None, resource_types: tuple[str, ...] = (),
                 timeout: float = 30.0, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not client_id:
            raise CdsError("SMART Backend Services needs --client-id (or $CDS_BULK_CLIENT_ID)")
        self.base = fhir_base(fhir_url)
        self.client_id = client_id
        self.key = key
        self.scope = scope
        self.token_endpoint = require_tls(token_endpoint, "the token endpoint") if token_endpoint else None
        self.resource_types = resource_types
        self.timeout = timeout
        self.session = session or requests.Session()
        self.clock = clock
        self.requests = 0                    # token requests made (reported by the CLI)
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    # --- discovery --------------------------------------------------------------------------------
    def discover(self) -> str:
        """The token endpoint from `[base]/.well-known/smart-configuration`, and the scope to ask
        for. A token endpoint given by the operator skips it (and the scope is then SMART v2's)."""
        if self.token_endpoint is not None:
            if self.scope is None:
                self.scope = default_scope(self.resource_types, {})
            return self.token_endpoint
        url = f"{self.base}/.well-known/smart-configuration"
        what = f"the FHIR server's SMART configuration {url}"
        try:
            response = self.session.get(url, headers={"Accept": "application/json"}, timeout=self.timeout,
                                        allow_redirects=False, stream=True)
        except requests.RequestException as err:
            raise CdsError(f"{what} could not be read: {err.__class__.__name__}: {err}") from None
        if response.status_code != 200:
            response.close()
            raise CdsError(f"{what} answered {response.status_code} (give --token-endpoint if the EHR "
                           "publishes its token endpoint elsewhere)")
        found = _read_json(response, what)
        configuration = found if isinstance(found, dict) else {}
        endpoint = configuration.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise CdsError(f"{what} names no token_endpoint")
        methods = configuration.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            raise CdsError(f"{what}: the token endpoint takes {', '.join(map(_said, methods)) or 'no method'}, "
                           "not private_key_jwt (asymmetric client authentication)")
        algorithms = configuration.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algorithms, list) and self.key.algorithm not in algorithms:
            raise CdsError(f"{what}: the token endpoint takes assertions signed with "
                           f"{', '.join(map(_said, algorithms)) or 'nothing'}, not {self.key.algorithm}")
        self.token_endpoint = require_tls(endpoint, "the token endpoint the SMART configuration names")
        if self.scope is None:
            self.scope = default_scope(self.resource_types, configuration)
        return self.token_endpoint

    # --- tokens -----------------------------------------------------------------------------------
    def assertion(self, endpoint: str) -> str:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": endpoint,
                  "exp": now + ASSERTION_LIFETIME, "jti": secrets.token_urlsafe(32)}
        return jwt.encode(claims, self.key.key, algorithm=self.key.algorithm,
                          headers={"kid": self.key.key_id, "typ": "JWT"})

    def token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def expire(self, token: str) -> None:
        """The server refused `token` (401): the next `token()` gets a new one."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> None:
        endpoint = self.discover()
        form = {"grant_type": "client_credentials", "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion(endpoint)}
        asked = self.clock()
        what = f"the SMART token endpoint {endpoint}"
        try:
            # No redirect: the assertion is for this endpoint (its aud) and goes nowhere else.
            response = self.session.post(endpoint, data=form, headers={"Accept": "application/json"},
                                         timeout=self.timeout, allow_redirects=False, stream=True)
        except requests.RequestException as err:
            raise CdsError(f"{what} could not be reached: {err.__class__.__name__}: {err}") from None
        self.requests += 1
        if response.status_code != 200:
            body = {}
            try:
                found = _read_json(response, what)
                body = found if isinstance(found, dict) else {}
            except CdsError:
                pass
            said = ": ".join(_said(body[k]) for k in ("error", "error_description") if body.get(k))
            hint = (" — check --client-id, --key-id and that the EHR holds this key's public key"
                    if body.get("error") == "invalid_client" else
                    " — check --scope against what the EHR granted this client" if body.get("error") == "invalid_scope"
                    else "")
            verb = "refused" if response.status_code < 500 else "could not answer"
            raise CdsError(f"{what} {verb} the token request ({response.status_code}"
                           f"{': ' + said if said else ''}){hint}")
        body = _read_json(response, what)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise CdsError(f"{what} answered 200 without an access_token")
        kind = body.get("token_type")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise CdsError(f"{what} issued a token of type {_said(kind)!r}, not a bearer token")
        lifetime = body.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
            # expires_in is required of backend services; without it, only the server's 401 says when
            lifetime = float("inf")
        self._token = token
        self._renew_at = asked + lifetime - min(RENEW_MARGIN, lifetime / 5)


class StaticToken:
    """A bearer token obtained outside (`--token`): used as it is, never renewed."""

    renewable = False
    requests = 0

    def __init__(self, token: str):
        self._token = token

    def token(self) -> str:
        return self._token

    def expire(self, token: str) -> None:
        pass
