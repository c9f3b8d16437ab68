"""JWT bearer authentication (cds.service.auth) against real keys, real tokens and real HTTP.

Every JWK Set is served over HTTP on loopback by a server these tests start and that records each
request it gets, so "no request was made" is observed, not assumed. Keys are generated with
`cryptography`; tokens are signed with PyJWT (or built by hand for `alg: none`). Replay tests use the
Redis at 127.0.0.1:6379 with a key prefix unique to the test, removed afterwards.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds.errors import CdsError
from cds.service.auth import (
    AuthConfig,
    AuthError,
    InProcessReplayCache,
    JwtVerifier,
    RedisReplayCache,
    SqliteReplayCache,
    TrustedIssuer,
    replay_cache_from_env,
    verification_key,
)

REPO = Path(__file__).resolve().parents[2]
EHR = "https://ehr.example.org"
AUDIENCE = "https://cds.example.org/cds-services/pgx-order-select"
REDIS_URL = "redis://127.0.0.1:6379/0"


# --- a JWK Set server on loopback ----------------------------------------------------------------


class AuthJwksServer:
    """Serves JWK Sets by path; records every request; can be slow or trickle its body."""

    def __init__(self):
        self.documents: dict[str, dict] = {}
        self.requests: list[str] = []
        self.delay = 0.0          # seconds before answering
        self.trickle = False      # send headers, then one body byte every 0.1 s
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                time.sleep(server.delay)
                if server.trickle:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    try:
                        for _ in range(100000):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass
                    return
                document = server.documents.get(self.path)
                if document is None:
                    self.send_error(404)
                    return
                body = json.dumps(document).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass                  # the client gave up waiting (the slow-server tests)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str = "/jwks.json") -> str:
        return self.base + path

    def publish(self, *jwks: dict, path: str = "/jwks.json") -> str:
        self.documents[path] = {"keys": list(jwks)}
        return self.url(path)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def auth_jwks_server():
    server = AuthJwksServer()
    yield server
    server.stop()


@pytest.fixture
def auth_attacker_server():
    server = AuthJwksServer()
    yield server
    server.stop()


# --- keys and tokens -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def auth_ec_key():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def auth_other_ec_key():
    return ec.generate_private_key(ec.SECP384R1())


def public_jwk(private_key, kid: str, alg: str | None = None) -> dict:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    jwk.update(kid=kid, use="sig")
    if alg:
        jwk["alg"] = alg
    return jwk


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {"iss": EHR, "aud": AUDIENCE, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(private_key, alg: str, kid: str | None, payload: dict | None = None, **header) -> str:
    headers = dict(header)
    if kid is not None:
        headers["kid"] = kid
    return jwt.encode(payload if payload is not None else claims(), private_key, algorithm=alg, headers=headers)


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bearer(token: str) -> str:
    return f"Bearer {token}"


def make_verifier(*issuers: TrustedIssuer, cache=None, **tolerances) -> JwtVerifier:
    tolerances.setdefault("jwks_min_refetch_seconds", 0.0)
    config = AuthConfig(issuers={i.iss: i for i in issuers}, **tolerances)
    return JwtVerifier(config, cache if cache is not None else InProcessReplayCache(), http_timeout=0.5)


def refused(verifier: JwtVerifier, header: str | None, audience: str = AUDIENCE) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verifier.verify(header, audience)
    err = caught.value
    assert err.status in (401, 503)
    if header:
        token = header.split()[-1]
        if len(token) > 8:
            assert token not in err.reason and token not in str(err)
    return err


@pytest.fixture
def auth_ehr(auth_jwks_server, auth_rsa_key, auth_ec_key):
    """A trusted EHR publishing an RSA key (rsa-1) and an EC P-384 key (ec-1) at its JWKS URL."""
    url = auth_jwks_server.publish(public_jwk(auth_rsa_key, "rsa-1"), public_jwk(auth_ec_key, "ec-1", "ES384"))
    return TrustedIssuer(iss=EHR, jwks_url=url)


# --- valid tokens --------------------------------------------------------------------------------


def test_valid_rs384_token_returns_its_claims(auth_ehr, auth_rsa_key, auth_jwks_server):
    verifier = make_verifier(auth_ehr)
    payload = claims(tenant="hospital-7")
    result = verifier.verify(bearer(sign(auth_rsa_key, "RS384", "rsa-1", payload)), AUDIENCE)
    assert result == payload
    assert auth_jwks_server.requests == ["/jwks.json"]


def test_valid_es384_token_returns_its_claims(auth_ehr, auth_ec_key):
    verifier = make_verifier(auth_ehr)
    payload = claims()
    assert verifier.verify(bearer(sign(auth_ec_key, "ES384", "ec-1", payload)), AUDIENCE)["jti"] == payload["jti"]


def test_key_set_is_cached_between_calls(auth_ehr, auth_ec_key, auth_jwks_server):
    verifier = make_verifier(auth_ehr)
    for _ in range(5):
        verifier.verify(bearer(sign(auth_ec_key, "ES384", "ec-1")), AUDIENCE)
    assert auth_jwks_server.requests == ["/jwks.json"]


def test_bearer_scheme_is_case_insensitive(auth_ehr, auth_ec_key):
    verifier = make_verifier(auth_ehr)
    assert verifier.verify("bearer " + sign(auth_ec_key, "ES384", "ec-1"), AUDIENCE)["iss"] == EHR


# The example token, JWK and claims published in CDS Hooks 2.0 "Trusting CDS Clients › Example"
# (https://cds-hooks.hl7.org/2.0/#trusting-cds-clients; cds-hooks/docs docs/specification/current.md),
# copied verbatim. It is ES384 and carries a jku, and was issued in 2011.
SPEC_EXAMPLE_JWK = {
    "kty": "EC", "use": "sig", "crv": "P-384", "kid": "example-kid",
    "x": "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",
    "y": "XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI", "alg": "ES384",
}
SPEC_EXAMPLE_TOKEN = (
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUta2lkIiwiamt1IjoiaHR0cHM6Ly9maGlyLWVoci5leGFtcGxlLmNvbS9qd2tfdXJpIn0"
    ".eyJpc3MiOiJodHRwczovL2ZoaXItZWhyLmV4YW1wbGUuY29tLyIsInN1YiI6ImNsaWVudF9pZCIsImF1ZCI6Imh0dHBzOi8vY2RzLmV4YW1wbGUub3JnL2Nkcy1zZXJ2aWNlcy9zb21lLXNlcnZpY2UiLCJleHAiOjE0MjI1Njg4NjAsImlhdCI6MTMxMTI4MDk3MCwianRpIjoiZWUyMmIwMjEtZTFiNy00NjExLWJhNWItOGVlYzZhMzNhYzFlIiwidGVuYW50IjoiMmRkZDZjM2EtOGU5YS00NGM2LWEzMDUtNTIxMTFhZDMwMmEyIn0"
    ".CUFPkplnWd6YGIvzoHolWCQBDsCL8QtTWKGg_QFpS169WrqDGzktRi-_we6-6rVzbjerU27ZKww_SW0-b9RTz-dPJNcqsueMio8r6EqXUXhbLm_ch3XFSbDlGHDl_tqo"
)


def spec_example_config(tmp_path: Path, jku: list[str]) -> AuthConfig:
    pem = ECAlgorithm.from_jwk(SPEC_EXAMPLE_JWK).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "example-ehr.pem").write_text(pem)
    (tmp_path / "issuers.yaml").write_text(json.dumps({
        "max_token_lifetime_seconds": 10 ** 9,     # the example is valid for 3.5 years
        "issuers": [{"iss": "https://fhir-ehr.example.com/", "public_key_file": "example-ehr.pem",
                     "kid": "example-kid", "jku": jku, "algorithms": ["ES384"]}],
    }))
    return AuthConfig.from_yaml(tmp_path / "issuers.yaml")


def test_the_specifications_own_example_token_verifies(tmp_path):
    config = spec_example_config(tmp_path, jku=["https://fhir-ehr.example.com/jwk_uri"])
    issued = 1311280970
    verifier = JwtVerifier(config, InProcessReplayCache(clock=lambda: issued + 60), clock=lambda: issued + 60)
    result = verifier.verify(bearer(SPEC_EXAMPLE_TOKEN), "https://cds.example.org/cds-services/some-service")
    assert result["tenant"] == "2ddd6c3a-8e9a-44c6-a305-52111ad302a2"
    assert result["jti"] == "ee22b021-e1b7-4611-ba5b-8eec6a33ac1e"


def test_the_specifications_example_token_is_expired_today(tmp_path):
    config = spec_example_config(tmp_path, jku=["https://fhir-ehr.example.com/jwk_uri"])
    err = refused(JwtVerifier(config, InProcessReplayCache()), bearer(SPEC_EXAMPLE_TOKEN),
                  "https://cds.example.org/cds-services/some-service")
    assert "expired" in err.reason


def test_the_specifications_example_jku_must_be_allowed_even_with_a_pinned_key(tmp_path):
    config = spec_example_config(tmp_path, jku=[])
    issued = 1311280970
    verifier = JwtVerifier(config, InProcessReplayCache(), clock=lambda: issued + 60)
    err = refused(verifier, bearer(SPEC_EXAMPLE_TOKEN), "https://cds.example.org/cds-services/some-service")
    assert "jku" in err.reason


# --- time claims ---------------------------------------------------------------------------------


def test_expired_token_is_refused(auth_ehr, auth_ec_key):
    now = int(time.time())
    token = sign(auth_ec_key, "ES384", "ec-1", claims(iat=now - 600, exp=now - 120))
    assert "expired" in refused(make_verifier(auth_ehr), bearer(token)).reason


def test_expiry_within_the_clock_skew_is_tolerated(auth_ehr, auth_ec_key):
    now = int(time.time())
    token = sign(auth_ec_key, "ES384", "ec-1", claims(iat=now - 600, exp=now - 20))
    assert make_verifier(auth_ehr, clock_skew=60).verify(bearer(token), AUDIENCE)["exp"] == now - 20
    token = sign(auth_ec_key, "ES384", "ec-1", claims(iat=now - 600, exp=now - 20))
    assert "expired" in refused(make_verifier(auth_ehr, clock_skew=5), bearer(token)).reason


def test_iat_in_the_future_beyond_the_skew_is_refused(auth_ehr, auth_ec_key):
    now = int(time.time())
    token = sign(auth_ec_key, "ES384", "ec-1", claims(iat=now + 300, exp=now + 600))
    assert "future" in refused(make_verifier(auth_ehr), bearer(token)).reason


def test_iat_slightly_ahead_within_the_skew_is_accepted(auth_ehr, auth_ec_key):
    now = int(time.time())
    token = sign(auth_ec_key, "ES384", "ec-1", claims(iat=now + 20, exp=now + 300))
    assert make_verifier(auth_ehr).verify(bearer(token), AUDIENCE)["iat"] == now + 20


def test_nbf_in_the_future_is_refused(auth_ehr, auth_ec_key):
    now = int(time.time())
    token = sign(auth_ec_key, "ES384", "ec-1", claims(nbf=now + 300, exp=now + 600))
    assert "nbf" in refused(make_verifier(auth_ehr), bearer(token)).reason


def test_token_valid_for_longer_than_the_maximum_lifetime_is_refused(auth_ehr, auth_ec_key):
    now = int(time.time())
    token = sign(auth_ec_key, "ES384", "ec-1", claims(exp=now + 7200))
    assert "too long" in refused(make_verifier(auth_ehr, max_token_lifetime=3600), bearer(token)).reason


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud"])
def test_missing_required_claim_is_refused(auth_ehr, auth_ec_key, claim):
    token = sign(auth_ec_key, "ES384", "ec-1", claims(**{claim: None}))
    assert f"'{claim}'" in refused(make_verifier(auth_ehr), bearer(token)).reason


@pytest.mark.parametrize("claim,value", [("exp", "tomorrow"), ("iat", True), ("jti", 42), ("jti", ""),
                                         ("tenant", 7)])
def test_claim_of_the_wrong_type_is_refused(auth_ehr, auth_ec_key, claim, value):
    token = sign(auth_ec_key, "ES384", "ec-1", claims(**{claim: value}))
    refused(make_verifier(auth_ehr), bearer(token))


# --- audience --------------------------------------------------------------------------------------


def test_wrong_audience_is_refused(auth_ehr, auth_ec_key):
    token = sign(auth_ec_key, "ES384", "ec-1", claims(aud="https://cds.example.org/cds-services/other"))
    err = refused(make_verifier(auth_ehr), bearer(token))
    assert "aud" in err.reason and AUDIENCE in err.reason


def test_audience_of_another_host_with_the_same_path_is_refused(auth_ehr, auth_ec_key):
    token = sign(auth_ec_key, "ES384", "ec-1", claims(aud="https://evil.example.net/cds-services/pgx-order-select"))
    refused(make_verifier(auth_ehr), bearer(token))


def test_audience_array_containing_our_endpoint_is_accepted(auth_ehr, auth_ec_key):
    token = sign(auth_ec_key, "ES384", "ec-1", claims(aud=["https://other.example.org/x", AUDIENCE]))
    assert AUDIENCE in make_verifier(auth_ehr).verify(bearer(token), AUDIENCE)["aud"]


def test_audience_array_without_our_endpoint_is_refused(auth_ehr, auth_ec_key):
    token = sign(auth_ec_key, "ES384", "ec-1", claims(aud=["https://other.example.org/x"]))
    refused(make_verifier(auth_ehr), bearer(token))


# --- issuer and keys -----------------------------------------------------------------------------


def test_unknown_issuer_is_refused_without_fetching_anything(auth_ehr, auth_ec_key, auth_jwks_server):
    token = sign(auth_ec_key, "ES384", "ec-1", claims(iss="https://stranger.example.net"))
    err = refused(make_verifier(auth_ehr), bearer(token))
    assert "not trusted" in err.reason and "stranger.example.net" in err.reason
    assert auth_jwks_server.requests == []


def test_trusted_issuer_signed_with_a_different_key_is_refused(auth_ehr, auth_other_ec_key):
    token = sign(auth_other_ec_key, "ES384", "ec-1")     # the right kid, the wrong private key
    assert "signature" in refused(make_verifier(auth_ehr), bearer(token)).reason


def test_tampered_payload_is_refused(auth_ehr, auth_ec_key):
    header, _, signature = sign(auth_ec_key, "ES384", "ec-1").split(".")
    forged = ".".join([header, b64(claims(tenant="someone-else")), signature])
    assert "signature" in refused(make_verifier(auth_ehr), bearer(forged)).reason


def test_unknown_kid_triggers_a_refetch_that_finds_the_rotated_key(auth_jwks_server, auth_ec_key,
                                                                     auth_other_ec_key):
    url = auth_jwks_server.publish(public_jwk(auth_ec_key, "2024-key"))
    verifier = make_verifier(TrustedIssuer(iss=EHR, jwks_url=url), jwks_min_refetch_seconds=0)
    verifier.verify(bearer(sign(auth_ec_key, "ES384", "2024-key")), AUDIENCE)
    auth_jwks_server.publish(public_jwk(auth_other_ec_key, "2025-key"))       # the EHR rotates its key
    result = verifier.verify(bearer(sign(auth_other_ec_key, "ES384", "2025-key")), AUDIENCE)
    assert result["iss"] == EHR
    assert auth_jwks_server.requests == ["/jwks.json", "/jwks.json"]


def test_refetch_for_unknown_kids_is_rate_limited(auth_jwks_server, auth_ec_key):
    url = auth_jwks_server.publish(public_jwk(auth_ec_key, "ec-1"))
    verifier = make_verifier(TrustedIssuer(iss=EHR, jwks_url=url), jwks_min_refetch_seconds=60)
    verifier.verify(bearer(sign(auth_ec_key, "ES384", "ec-1")), AUDIENCE)
    for attempt in range(3):
        err = refused(verifier, bearer(sign(auth_ec_key, "ES384", f"made-up-{attempt}")))
        assert "kid" in err.reason
    assert auth_jwks_server.requests == ["/jwks.json"]


def test_concurrent_calls_with_a_cold_cache_fetch_the_key_set_once(auth_ehr, auth_ec_key, auth_jwks_server):
    auth_jwks_server.delay = 0.2
    verifier = make_verifier(auth_ehr, jwks_min_refetch_seconds=60)
    tokens = [bearer(sign(auth_ec_key, "ES384", "ec-1")) for _ in range(8)]
    results: list = []

    def call(header):
        try:
            results.append(verifier.verify(header, AUDIENCE)["iss"])
        except AuthError as err:
            results.append(err)

    threads = [threading.Thread(target=call, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [EHR] * 8
    assert auth_jwks_server.requests == ["/jwks.json"]


def test_stale_key_set_is_used_while_the_jwks_server_is_down(auth_ehr, auth_ec_key, auth_jwks_server):
    verifier = make_verifier(auth_ehr, jwks_cache_seconds=0, jwks_min_refetch_seconds=0)
    verifier.verify(bearer(sign(auth_ec_key, "ES384", "ec-1")), AUDIENCE)
    auth_jwks_server.documents.clear()                          # now answers 404
    assert verifier.verify(bearer(sign(auth_ec_key, "ES384", "ec-1")), AUDIENCE)["iss"] == EHR
    assert len(auth_jwks_server.requests) == 2                   # it did try to refresh


def test_algorithm_that_does_not_fit_the_key_is_refused(auth_ehr, auth_ec_key):
    # ES384-signed, but naming the RSA key's kid: the key decides the algorithm, not the token.
    token = sign(auth_ec_key, "ES384", "rsa-1")
    assert "does not fit" in refused(make_verifier(auth_ehr), bearer(token)).reason


def test_jwk_declaring_another_alg_binds_that_alg(auth_jwks_server, auth_rsa_key):
    url = auth_jwks_server.publish(public_jwk(auth_rsa_key, "rsa-384", "RS384"))
    verifier = make_verifier(TrustedIssuer(iss=EHR, jwks_url=url))
    refused(verifier, bearer(sign(auth_rsa_key, "RS256", "rsa-384")))
    assert verifier.verify(bearer(sign(auth_rsa_key, "RS384", "rsa-384")), AUDIENCE)["iss"] == EHR


def test_issuer_limited_to_es384_refuses_rs384(auth_jwks_server, auth_rsa_key):
    url = auth_jwks_server.publish(public_jwk(auth_rsa_key, "rsa-1"))
    issuer = TrustedIssuer(iss=EHR, jwks_url=url, algorithms=frozenset({"ES384"}))
    refused(make_verifier(issuer), bearer(sign(auth_rsa_key, "RS384", "rsa-1")))
    assert auth_jwks_server.requests == []


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")   # signing with it, on purpose
def test_rsa_key_shorter_than_2048_bits_is_refused(auth_jwks_server):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    url = auth_jwks_server.publish(public_jwk(weak, "weak"))
    verifier = make_verifier(TrustedIssuer(iss=EHR, jwks_url=url))
    assert "weak" in refused(verifier, bearer(sign(weak, "RS384", "weak"))).reason


def test_key_set_publishing_a_private_key_is_not_used(auth_jwks_server, auth_ec_key):
    leaked = ECAlgorithm.to_jwk(auth_ec_key, as_dict=True)      # includes "d"
    leaked.update(kid="leaked", use="sig")
    url = auth_jwks_server.publish(leaked)
    verifier = make_verifier(TrustedIssuer(iss=EHR, jwks_url=url))
    assert "kid" in refused(verifier, bearer(sign(auth_ec_key, "ES384", "leaked"))).reason


def test_pinned_public_key_verifies_without_any_network(auth_ec_key):
    issuer = TrustedIssuer(iss=EHR, public_key=verification_key(auth_ec_key.public_key()))
    assert make_verifier(issuer).verify(bearer(sign(auth_ec_key, "ES384", "any")), AUDIENCE)["iss"] == EHR


# --- forbidden algorithms and headers ------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(auth_ehr, auth_jwks_server, alg):
    unsigned = f"{b64({'alg': alg, 'typ': 'JWT', 'kid': 'ec-1'})}.{b64(claims())}."
    err = refused(make_verifier(auth_ehr), bearer(unsigned))
    assert "'none'" in err.reason
    assert auth_jwks_server.requests == []


def test_alg_none_with_a_pinned_key_is_refused(auth_ec_key):
    issuer = TrustedIssuer(iss=EHR, public_key=verification_key(auth_ec_key.public_key()))
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': 'k'})}.{b64(claims())}."
    assert "'none'" in refused(make_verifier(issuer), bearer(unsigned)).reason


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_symmetric_hmac_algorithms_are_refused(auth_ehr, auth_jwks_server, alg):
    token = jwt.encode(claims(), "a-shared-secret-that-is-long-enough-for-hs512-use-0123456789abcdef",
                       algorithm=alg, headers={"kid": "ec-1"})
    assert "symmetric" in refused(make_verifier(auth_ehr), bearer(token)).reason
    assert auth_jwks_server.requests == []


def test_hs256_signed_with_the_issuers_public_key_is_refused(auth_ec_key):
    # The classic key-confusion forgery: HMAC keyed with the (public) PEM the service holds.
    issuer = TrustedIssuer(iss=EHR, public_key=verification_key(auth_ec_key.public_key()))
    pem = auth_ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": "k"}
    signing_input = f"{b64(header)}.{b64(claims())}".encode()
    import hashlib
    import hmac
    signature = base64.urlsafe_b64encode(hmac.new(pem, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    forged = signing_input.decode() + "." + signature.decode()
    assert "symmetric" in refused(make_verifier(issuer), bearer(forged)).reason


@pytest.mark.parametrize("header,reason", [
    ({"alg": "ES384", "typ": "JWT"}, "kid"),
    ({"alg": "ES384", "typ": "JOSE", "kid": "ec-1"}, "typ"),
    ({"alg": "ES384", "kid": "ec-1"}, "typ"),
    ({"alg": "EdDSA", "typ": "JWT", "kid": "ec-1"}, "not accepted"),
    ({"typ": "JWT", "kid": "ec-1"}, "alg"),
])
def test_header_fields_required_by_the_spec(auth_ehr, header, reason):
    token = f"{b64(header)}.{b64(claims())}.c2lnbmF0dXJl"
    assert reason in refused(make_verifier(auth_ehr), bearer(token)).reason


# --- jku -----------------------------------------------------------------------------------------


def test_jku_not_on_the_allow_list_is_refused_without_any_request_to_it(auth_ehr, auth_attacker_server,
                                                                         auth_jwks_server, auth_other_ec_key):
    # The attacker serves a JWK Set with their own key and points the token's jku at it.
    attacker_jku = auth_attacker_server.publish(public_jwk(auth_other_ec_key, "ec-1"))
    token = sign(auth_other_ec_key, "ES384", "ec-1", jku=attacker_jku)
    err = refused(make_verifier(auth_ehr), bearer(token))
    assert "jku" in err.reason
    assert auth_attacker_server.requests == []
    assert auth_jwks_server.requests == []


def test_jku_on_the_allow_list_is_where_the_keys_come_from(auth_jwks_server, auth_ec_key):
    primary = auth_jwks_server.publish(public_jwk(auth_ec_key, "old"), path="/primary.json")
    regional = auth_jwks_server.publish(public_jwk(auth_ec_key, "regional"), path="/regional.json")
    issuer = TrustedIssuer(iss=EHR, jwks_url=primary, allowed_jku=frozenset({regional}))
    token = sign(auth_ec_key, "ES384", "regional", jku=regional)
    assert make_verifier(issuer).verify(bearer(token), AUDIENCE)["iss"] == EHR
    assert auth_jwks_server.requests == ["/regional.json"]


def test_jku_equal_to_the_configured_jwks_url_is_accepted(auth_ehr, auth_ec_key):
    token = sign(auth_ec_key, "ES384", "ec-1", jku=auth_ehr.jwks_url)
    assert make_verifier(auth_ehr).verify(bearer(token), AUDIENCE)["iss"] == EHR


def test_jku_allowed_for_another_issuer_is_refused(auth_jwks_server, auth_ec_key, auth_other_ec_key):
    ours = auth_jwks_server.publish(public_jwk(auth_ec_key, "ec-1"), path="/ours.json")
    theirs = auth_jwks_server.publish(public_jwk(auth_other_ec_key, "ec-1"), path="/theirs.json")
    verifier = make_verifier(TrustedIssuer(iss=EHR, jwks_url=ours),
                             TrustedIssuer(iss="https://other-ehr.example.org", jwks_url=theirs))
    token = sign(auth_other_ec_key, "ES384", "ec-1", jku=theirs)      # iss is EHR, jku is the other's
    assert "jku" in refused(verifier, bearer(token)).reason
    assert auth_jwks_server.requests == []


# --- replay --------------------------------------------------------------------------------------


def test_replayed_jti_is_refused_in_process(auth_ehr, auth_ec_key):
    verifier = make_verifier(auth_ehr)
    header = bearer(sign(auth_ec_key, "ES384", "ec-1"))
    verifier.verify(header, AUDIENCE)
    assert "replayed" in refused(verifier, header).reason


def test_same_jti_in_a_freshly_signed_token_is_still_a_replay(auth_ehr, auth_ec_key, auth_rsa_key):
    verifier = make_verifier(auth_ehr)
    payload = claims()
    verifier.verify(bearer(sign(auth_ec_key, "ES384", "ec-1", payload)), AUDIENCE)
    assert "replayed" in refused(verifier, bearer(sign(auth_rsa_key, "RS384", "rsa-1", payload))).reason


def test_same_jti_from_two_issuers_is_not_a_replay(auth_jwks_server, auth_ec_key, auth_other_ec_key):
    a = auth_jwks_server.publish(public_jwk(auth_ec_key, "a"), path="/a.json")
    b = auth_jwks_server.publish(public_jwk(auth_other_ec_key, "b"), path="/b.json")
    other = "https://other-ehr.example.org"
    verifier = make_verifier(TrustedIssuer(iss=EHR, jwks_url=a), TrustedIssuer(iss=other, jwks_url=b))
    verifier.verify(bearer(sign(auth_ec_key, "ES384", "a", claims(jti="shared"))), AUDIENCE)
    verifier.verify(bearer(sign(auth_other_ec_key, "ES384", "b", claims(iss=other, jti="shared"))), AUDIENCE)


def test_invalid_token_does_not_use_up_its_jti(auth_ehr, auth_ec_key):
    verifier = make_verifier(auth_ehr)
    payload = claims()
    refused(verifier, bearer(sign(auth_ec_key, "ES384", "ec-1", dict(payload, aud="https://elsewhere/x"))))
    assert verifier.verify(bearer(sign(auth_ec_key, "ES384", "ec-1", payload)), AUDIENCE)["jti"] == payload["jti"]


def test_in_process_cache_forgets_entries_at_their_expiry():
    now = [1000.0]
    cache = InProcessReplayCache(clock=lambda: now[0])
    assert cache.first_use(EHR, "j1", expires_at=1100.0)
    assert not cache.first_use(EHR, "j1", expires_at=1100.0)
    assert len(cache) == 1
    now[0] = 1100.0
    assert len(cache) == 0
    assert cache.first_use(EHR, "j1", expires_at=1200.0)


def test_in_process_cache_is_bounded_and_refuses_rather_than_forgetting_live_entries():
    now = [1000.0]
    cache = InProcessReplayCache(max_entries=3, clock=lambda: now[0])
    for jti in ("a", "b", "c"):
        assert cache.first_use(EHR, jti, expires_at=1060.0 + ord(jti))
    with pytest.raises(AuthError) as caught:
        cache.first_use(EHR, "d", expires_at=1200.0)
    assert caught.value.status == 503
    assert not cache.first_use(EHR, "a", expires_at=1157.0)      # the live entries are still there
    now[0] = 1098.0                                              # "a" (1157) lives; none expired yet
    with pytest.raises(AuthError):
        cache.first_use(EHR, "d", expires_at=1200.0)
    now[0] = 1158.0                                              # "a" has expired: room again
    assert cache.first_use(EHR, "d", expires_at=1200.0)


def test_in_process_cache_is_thread_safe():
    cache = InProcessReplayCache()
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def use():
        barrier.wait()
        results.append(cache.first_use(EHR, "contended", time.time() + 60))

    threads = [threading.Thread(target=use) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


@pytest.fixture
def auth_redis_prefix():
    prefix = f"pgx-cds-test:{uuid.uuid4()}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_replayed_jti_is_refused_across_replicas_sharing_redis(auth_ehr, auth_ec_key, auth_redis_prefix):
    # Two verifiers, two Redis connections: two service replicas behind one load balancer.
    replica_a = make_verifier(auth_ehr, cache=RedisReplayCache.from_url(REDIS_URL, prefix=auth_redis_prefix))
    replica_b = make_verifier(auth_ehr, cache=RedisReplayCache.from_url(REDIS_URL, prefix=auth_redis_prefix))
    header = bearer(sign(auth_ec_key, "ES384", "ec-1"))
    replica_a.verify(header, AUDIENCE)
    assert "replayed" in refused(replica_b, header).reason
    assert "replayed" in refused(replica_a, header).reason


def test_redis_entry_expires_at_the_tokens_expiry_plus_skew(auth_redis_prefix):
    cache = RedisReplayCache.from_url(REDIS_URL, prefix=auth_redis_prefix)
    expires_at = time.time() + 120
    assert cache.first_use(EHR, "j-ttl", expires_at)
    assert not cache.first_use(EHR, "j-ttl", expires_at)
    client = redis.Redis.from_url(REDIS_URL)
    (key,) = list(client.scan_iter(match=auth_redis_prefix + "*"))
    assert 100 < client.ttl(key) <= 121
    client.close()


def test_redis_unreachable_is_a_503_auth_error_not_a_traceback(auth_ehr, auth_ec_key):
    dead = RedisReplayCache(RedisReplayCache.client_for(f"redis://127.0.0.1:{free_port()}/0"))
    err = refused(make_verifier(auth_ehr, cache=dead), bearer(sign(auth_ec_key, "ES384", "ec-1")))
    assert err.status == 503


def test_replay_cache_from_env_chooses_redis_when_configured(auth_redis_prefix, tmp_path):
    assert isinstance(replay_cache_from_env({"CDS_REDIS_URL": REDIS_URL}), RedisReplayCache)
    assert isinstance(replay_cache_from_env({"CDS_LOCAL_STATE": str(tmp_path / "state.sqlite3")}), SqliteReplayCache)


@pytest.mark.parametrize("url", ["not a url", f"redis://127.0.0.1:{0}/0"])
def test_replay_cache_from_env_with_a_bad_redis_url_is_a_clear_error(url):
    url = url.replace(":0/", f":{free_port()}/")
    with pytest.raises(CdsError) as caught:
        replay_cache_from_env({"CDS_REDIS_URL": url})
    assert "CDS_REDIS_URL" in str(caught.value)


# --- the JWKS server misbehaving -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jwks_server_down_is_an_auth_error(auth_ec_key):
    issuer = TrustedIssuer(iss=EHR, jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")
    err = refused(make_verifier(issuer), bearer(sign(auth_ec_key, "ES384", "ec-1")))
    assert err.status == 401 and "could not be fetched" in err.reason


def test_jwks_server_answering_404_is_an_auth_error(auth_jwks_server, auth_ec_key):
    issuer = TrustedIssuer(iss=EHR, jwks_url=auth_jwks_server.url("/missing.json"))
    assert "could not be fetched" in refused(make_verifier(issuer), bearer(sign(auth_ec_key, "ES384", "ec-1"))).reason


def test_jwks_server_answering_garbage_is_an_auth_error(auth_jwks_server, auth_ec_key):
    auth_jwks_server.documents["/jwks.json"] = {"not": "a key set"}
    issuer = TrustedIssuer(iss=EHR, jwks_url=auth_jwks_server.url())
    assert "could not be fetched" in refused(make_verifier(issuer), bearer(sign(auth_ec_key, "ES384", "ec-1"))).reason


# The bounds below are hang guards (an unbounded wait would take the server's 5 s or 10 000 s),
# not speed measurements: the verifier's timeout is 0.5 s.
@pytest.mark.parametrize("misbehaviour", ["slow", "trickle"])
def test_slow_jwks_server_is_an_auth_error_within_the_timeout(auth_jwks_server, auth_ec_key, misbehaviour):
    auth_jwks_server.publish(public_jwk(auth_ec_key, "ec-1"))
    if misbehaviour == "slow":
        auth_jwks_server.delay = 5.0
    else:
        auth_jwks_server.trickle = True
    verifier = make_verifier(TrustedIssuer(iss=EHR, jwks_url=auth_jwks_server.url()), jwks_min_refetch_seconds=60)
    started = time.monotonic()
    err = refused(verifier, bearer(sign(auth_ec_key, "ES384", "ec-1")))
    assert time.monotonic() - started < 2.5
    assert "could not be fetched" in err.reason
    # A failed fetch is not retried on every call within the refetch interval.
    started = time.monotonic()
    refused(verifier, bearer(sign(auth_ec_key, "ES384", "ec-1")))
    assert time.monotonic() - started < 0.5
    assert len(auth_jwks_server.requests) == 1
    # The download thread itself ends too (its reads are deadline-checked), rather than lingering for
    # as long as the server cares to trickle.
    give_up = time.monotonic() + 5
    while any(t.name == "jwks-fetch" for t in threading.enumerate()) and time.monotonic() < give_up:
        time.sleep(0.05)
    assert not any(t.name == "jwks-fetch" for t in threading.enumerate())


# --- malformed Authorization headers -------------------------------------------------------------


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNzd29yZA==", "garbage", "Bearer a b",
    "Bearer onlyone", "Bearer a.b", "Bearer a.b.c.d", "Bearer %%%.%%%.%%%",
    "Bearer eyJub3QiOiJqc29u.eyJhIjoxfQ.c2ln", "Bearer " + "A" * 20000,
    f"Bearer {b64(['a', 'list'])}.{b64(claims())}.c2ln",
    f"Bearer {b64({'alg': 'ES384', 'typ': 'JWT', 'kid': 'ec-1'})}.bm90IGpzb24.c2ln",
])
def test_malformed_authorization_header_is_a_401(auth_ehr, auth_jwks_server, header):
    err = refused(make_verifier(auth_ehr), header)
    assert err.status == 401
    assert auth_jwks_server.requests == []


# --- configuration -------------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trusted-issuers.yaml"
    path.write_text(text)
    return path


def test_the_shipped_example_config_loads():
    config = AuthConfig.from_yaml(REPO / "config" / "trusted-issuers.example.yaml")
    sandbox = config.issuers["https://sandbox.cds-hooks.org"]
    assert sandbox.jwks_url == "https://sandbox.cds-hooks.org/.well-known/jwks.json"
    assert config.clock_skew == 60


def test_config_from_yaml_with_pinned_key_file_and_tolerances(tmp_path, auth_ec_key):
    pem = auth_ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ehr.pem").write_text(pem)
    path = write_config(tmp_path, f"""
clock_skew_seconds: 30
jwks_min_refetch_seconds: 10
issuers:
  - iss: {EHR}
    public_key_file: keys/ehr.pem
    kid: ehr-2025
  - iss: https://inline.example.org
    public_key: |
{''.join('      ' + line + chr(10) for line in pem.splitlines())}
""")
    config = AuthConfig.from_yaml(path)
    assert config.clock_skew == 30 and config.jwks_min_refetch_seconds == 10
    verifier = JwtVerifier(config, InProcessReplayCache())
    assert verifier.verify(bearer(sign(auth_ec_key, "ES384", "ehr-2025")), AUDIENCE)["iss"] == EHR
    assert "kid" in refused(verifier, bearer(sign(auth_ec_key, "ES384", "ehr-2024"))).reason
    token = sign(auth_ec_key, "ES384", "x", claims(iss="https://inline.example.org"))
    assert verifier.verify(bearer(token), AUDIENCE)["iss"] == "https://inline.example.org"


@pytest.mark.parametrize("text,expected", [
    ("issuers: [\n  - iss: x\n", ":2"),                                      # YAML syntax, with its line
    ("- just a list", "'issuers' list"),
    ("issuers: []", "non-empty list"),
    ("isuers: []", "unknown field 'isuers'"),
    ("issuers:\n  - jwks_url: https://a.example/jwks", "'iss'"),
    ("issuers:\n  - iss: a\n    jwks_uri: https://a.example/jwks", "unknown field 'jwks_uri'"),
    ("issuers:\n  - iss: a", "exactly one of"),
    ("issuers:\n  - iss: a\n    jwks_url: https://a.example/j\n    public_key: x", "exactly one of"),
    ("issuers:\n  - iss: a\n    jwks_url: http://a.example/jwks", "https://"),
    ("issuers:\n  - iss: a\n    jwks_url: https://a.example/j\n    jku: [http://evil.example/j]", "https://"),
    ("issuers:\n  - iss: a\n    jwks_url: https://a.example/j\n    algorithms: [HS256]", "symmetric"),
    ("issuers:\n  - iss: a\n    jwks_url: https://a.example/j\n    algorithms: [none]", "'none'"),
    ("issuers:\n  - iss: a\n    jwks_url: https://a.example/j\n    kid: k", "'kid'"),
    ("issuers:\n  - iss: a\n    public_key: not a pem", "PEM"),
    ("issuers:\n  - iss: a\n    public_key_file: missing.pem", "cannot read"),
    ("issuers:\n  - iss: a\n    jwks_url: https://a.example/j\n  - iss: a\n    jwks_url: https://b.example/j",
     "listed twice"),
    ("clock_skew_seconds: soon\nissuers:\n  - iss: a\n    jwks_url: https://a.example/j", "clock_skew_seconds"),
])
def test_malformed_config_is_a_clear_error_naming_the_file(tmp_path, text, expected):
    path = write_config(tmp_path, text)
    with pytest.raises(CdsError) as caught:
        AuthConfig.from_yaml(path)
    message = str(caught.value)
    assert str(path) in message and expected in message


def test_private_key_in_config_is_refused(tmp_path, auth_ec_key):
    pem = auth_ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    (tmp_path / "k.pem").write_text(pem)
    path = write_config(tmp_path, "issuers:\n  - iss: a\n    public_key_file: k.pem\n")
    with pytest.raises(CdsError, match="private key"):
        AuthConfig.from_yaml(path)


def test_pinned_key_that_cannot_serve_the_listed_algorithms_is_refused(tmp_path, auth_ec_key):
    pem = auth_ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "k.pem").write_text(pem)
    path = write_config(tmp_path, "issuers:\n  - iss: a\n    public_key_file: k.pem\n    algorithms: [RS384]\n")
    with pytest.raises(CdsError, match="ES384"):
        AuthConfig.from_yaml(path)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(CdsError, match="cannot read"):
        AuthConfig.from_yaml(tmp_path / "nope.yaml")


def test_from_env_development_mode_needs_no_issuers():
    config = AuthConfig.from_env({"CDS_AUTH": "off"})
    assert not config.required
    with pytest.raises(ValueError):
        JwtVerifier(config, InProcessReplayCache())


def test_from_env_required_mode_needs_the_issuers_file(tmp_path):
    with pytest.raises(CdsError, match="CDS_TRUSTED_ISSUERS"):
        AuthConfig.from_env({})
    with pytest.raises(CdsError, match="CDS_AUTH"):
        AuthConfig.from_env({"CDS_AUTH": "maybe"})
    path = write_config(tmp_path, f"issuers:\n  - iss: {EHR}\n    jwks_url: https://ehr.example.org/jwks\n")
    config = AuthConfig.from_env({"CDS_TRUSTED_ISSUERS": str(path)})
    assert config.required and set(config.issuers) == {EHR}
