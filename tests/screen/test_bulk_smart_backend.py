"""`cds screen --fhir` authorised by SMART Backend Services against a loopback EHR: discovery from
.well-known/smart-configuration, a client assertion the EHR verifies with the registered public key
(kid, iss = sub, aud, exp, jti replay), the short-lived access token on every export request, a new
token when one expires mid-export, a refused assertion said clearly, and the token sent nowhere but
the FHIR server's origin."""
from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bulk_server import BulkServer, FileHost, SmartAuthority

CLIENT = "pgx-screening"


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def key_file(tmp_path):
    def write(key, name="client.pem"):
        path = tmp_path / name
        path.write_bytes(_pem(key))
        return str(path)
    return write


def run_cli(argv):
    from cds.cli import main
    return main(argv)


def screen_args(server, key_path, out, kid="key-1", *extra):
    return ["screen", "--fhir", server.url, "--client-id", CLIENT, "--private-key", key_path, "--key-id", kid,
            "--out", str(out), "--workers", "1", "--no-record", *extra]


def authorised_requests(server):
    return [(m, p, h.get("Authorization")) for _, m, p, h in server.requests
            if p.startswith(("/fhir/$export", "/status/", "/files/"))]


def test_an_export_authorised_by_backend_services(small_cohort, tmp_path, rsa_key, key_file, capsys):
    smart = SmartAuthority(CLIENT, rsa_key.public_key(), "key-1")
    server = BulkServer(small_cohort, polls_before_done=1, retry_after="0", smart=smart)
    try:
        status = run_cli(screen_args(server, key_file(rsa_key), tmp_path / "out"))
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert status == 0, err
    # discovery, then one token request whose assertion the EHR accepted
    paths = [p for _, _, p, _ in server.requests]
    assert paths.index("/fhir/.well-known/smart-configuration") < paths.index("/auth/token") < next(
        i for i, p in enumerate(paths) if p.startswith("/fhir/$export"))
    (grant,) = smart.token_requests
    assert grant["status"] == 200 and grant["header"]["alg"] == "RS384" and grant["header"]["kid"] == "key-1"
    claims = grant["claims"]
    assert claims["iss"] == claims["sub"] == CLIENT and claims["aud"] == smart.token_url
    assert grant["form"]["scope"].split() == ["system/Patient.rs", "system/Observation.rs", "system/DiagnosticReport.rs",
                                              "system/MedicationRequest.rs", "system/MedicationStatement.rs",
                                              "system/Medication.rs", "system/Consent.rs"]
    # every export request carried the issued token; the token endpoint never saw it
    sent = authorised_requests(server)
    assert sent and all(auth == f"Bearer {grant['token']}" for _, _, auth in sent), sent
    assert not server.refused
    token_call = next(h for _, _, p, h in server.requests if p == "/auth/token")
    assert "Authorization" not in token_call
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["counts"]["patients"] == 40
    assert f"1 access token(s) from {smart.token_url}" in err


def test_a_token_that_expires_mid_export_is_replaced(small_cohort, tmp_path, ec_key, key_file, capsys):
    """The EHR's token lasts two requests (kick-off, first poll): the second poll is refused, and the
    client gets a new token with a new assertion (a replayed jti would be refused) and goes on."""
    smart = SmartAuthority(CLIENT, ec_key.public_key(), "ec-1", uses_per_token=2)
    server = BulkServer(small_cohort, polls_before_done=2, retry_after="0", smart=smart)
    try:
        status = run_cli(screen_args(server, key_file(ec_key), tmp_path / "out", "ec-1", "--scope", "system/*.rs"))
    finally:
        server.stop()
    assert status == 0, capsys.readouterr().err
    grants = [g for g in smart.token_requests if g["status"] == 200]
    assert len(grants) >= 2 and len(grants) == len(smart.token_requests)
    assert all(g["header"]["alg"] == "ES384" and g["form"]["scope"] == "system/*.rs" for g in grants)
    assert len({g["claims"]["jti"] for g in grants}) == len(grants)
    first, second = grants[0]["token"], grants[1]["token"]
    # the refused request was the one after the first token's two uses, sent again with the second
    assert server.refused[0] == ("/status/job1", "the access token expired")
    sent = authorised_requests(server)
    assert [auth for _, _, auth in sent[:3]] == [f"Bearer {first}"] * 3
    assert sent[3] == ("GET", "/status/job1", f"Bearer {second}")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["counts"]["patients"] == 40


def test_a_token_is_renewed_before_it_expires(small_cohort, rsa_key, key_file):
    """Against the loopback token endpoint, with the client's clock moved on: the same token while
    it is fresh, a new one (new assertion) once within the renewal margin of expires_in."""
    from cds.screen.smart_backend import BackendServicesToken, load_client_key

    smart = SmartAuthority(CLIENT, rsa_key.public_key(), "key-1", lifetime=300)
    server = BulkServer(small_cohort, smart=smart)
    now = [1000.0]
    try:
        tokens = BackendServicesToken(server.url, CLIENT, load_client_key(key_file(rsa_key), "key-1"),
                                      resource_types=("Patient",), clock=lambda: now[0])
        first = tokens.token()
        now[0] += 239                 # 300 s tokens are renewed 60 s before they expire
        assert tokens.token() == first and len(smart.token_requests) == 1
        now[0] += 2
        second = tokens.token()
        assert second != first and len(smart.token_requests) == 2
        assert smart.accepts(f"Bearer {second}") is None
    finally:
        server.stop()


def test_an_assertion_signed_with_another_key_is_refused_clearly(small_cohort, tmp_path, rsa_key, key_file, capsys):
    smart = SmartAuthority(CLIENT, rsa_key.public_key(), "key-1")
    server = BulkServer(small_cohort, smart=smart)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        status = run_cli(screen_args(server, key_file(stranger, "other.pem"), tmp_path / "out"))
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert status == 1
    assert f"the SMART token endpoint {smart.token_url} refused the token request (401: invalid_client: " \
           "client assertion rejected: Signature verification failed)" in err
    assert "check --client-id, --key-id and that the EHR holds this key's public key" in err
    assert "Traceback" not in err
    assert not any(p.startswith("/fhir/$export") for _, _, p, _ in server.requests)   # nothing exported without a token


def test_the_token_goes_to_the_fhir_servers_origin_only(small_cohort, tmp_path, rsa_key, key_file, capsys):
    """Files on another origin: downloaded without the token when the manifest does not require it;
    refused (and never sent the token) when it does."""
    files = FileHost(small_cohort)
    try:
        for requires, out in ((False, tmp_path / "a"), (True, tmp_path / "b")):
            smart = SmartAuthority(CLIENT, rsa_key.public_key(), "key-1")
            server = BulkServer(small_cohort, polls_before_done=0, smart=smart, files_at=files.url,
                                requires_token=requires)
            try:
                status = run_cli(screen_args(server, key_file(rsa_key), out))
            finally:
                server.stop()
            err = capsys.readouterr().err
            if requires:
                assert status == 1
                assert "would be sent the access token but is not on the FHIR server's origin" in err
                assert f"(http://127.0.0.1:{server.httpd.server_port})" in err
            else:
                assert status == 0, err
                assert json.loads((out / "summary.json").read_text())["counts"]["patients"] == 40
        assert files.requests and all("Authorization" not in h for _, h in files.requests)
        assert len(files.requests) == len(list(small_cohort.glob("*.ndjson")))   # only the run that may download
    finally:
        files.stop()


def test_configuration_mistakes_are_said_before_anything_is_sent(small_cohort, tmp_path, rsa_key, key_file, capsys):
    smart = SmartAuthority(CLIENT, rsa_key.public_key(), "key-1")
    server = BulkServer(small_cohort, smart=smart)
    public = tmp_path / "public.pem"
    public.write_bytes(rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    p256 = key_file(ec.generate_private_key(ec.SECP256R1()), "p256.pem")
    out = str(tmp_path / "out")
    cases = [
        (["--client-id", CLIENT, "--private-key", str(public), "--key-id", "k"], "is a public key or certificate"),
        (["--client-id", CLIENT, "--private-key", p256, "--key-id", "k"], "is secp256r1"),
        (["--client-id", CLIENT, "--private-key", key_file(rsa_key)], "needs --key-id"),
        (["--client-id", CLIENT, "--key-id", "k"], "needs --private-key"),
        (["--private-key", key_file(rsa_key), "--key-id", "k"], "without --client-id"),
        (["--client-id", CLIENT, "--private-key", key_file(rsa_key), "--key-id", "k", "--token", "t"], "not both"),
    ]
    try:
        for extra, said in cases:
            assert run_cli(["screen", "--fhir", server.url, "--out", out, "--no-record", *extra]) == 1, extra
            err = capsys.readouterr().err
            assert said in err and "Traceback" not in err, (extra, err)
        assert server.requests == []
    finally:
        server.stop()
    # a token endpoint over plain http to another machine would carry the assertion in clear
    assert run_cli(["screen", "--fhir", server.url, "--out", out, "--no-record", "--client-id", CLIENT,
                    "--private-key", key_file(rsa_key), "--key-id", "k",
                    "--token-endpoint", "http://auth.example.org/token"]) == 1
    assert "must be an https:// URL" in capsys.readouterr().err


def test_an_encrypted_private_key_needs_its_passphrase(tmp_path, ec_key):
    from cds.errors import CdsError
    from cds.screen.smart_backend import load_client_key

    path = tmp_path / "locked.pem"
    path.write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"open sesame")))
    with pytest.raises(CdsError, match=r"is encrypted: set \$CDS_BULK_PRIVATE_KEY_PASSPHRASE"):
        load_client_key(path, "k")
    with pytest.raises(CdsError, match="wrong passphrase"):
        load_client_key(path, "k", "not it")
    key = load_client_key(path, "k", "open sesame")
    assert key.algorithm == "ES384" and key.key.private_numbers() == ec_key.private_numbers()
