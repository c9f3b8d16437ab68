"""Which fhirServer a call may make us contact (cds.service.fhir_servers): the issuer's list, and no
loopback, private or reserved address unless its network is configured. Addresses are IP literals
and `localhost`, resolved by the system resolver; nothing here sends a packet."""
from __future__ import annotations

import pytest

from cds.errors import CdsError
from cds.service.auth import normalised_base_url
from cds.service.fhir_servers import FhirServerPolicy, FhirServerRefused, parse_networks


@pytest.mark.parametrize("url,base", [
    ("https://FHIR.Example.org/r4/", "https://fhir.example.org/r4"),
    ("https://fhir.example.org:443/r4", "https://fhir.example.org/r4"),
    ("http://fhir.example.org:8080/r4", "http://fhir.example.org:8080/r4"),
    ("https://[2001:db8::1]/fhir", "https://[2001:db8::1]/fhir"),
])
def test_base_urls_are_normalised(url, base):
    assert normalised_base_url(url) == base


@pytest.mark.parametrize("url", ["ftp://fhir.example.org", "https://user:pw@fhir.example.org/r4",
                                 "https://fhir.example.org/r4?x=1", "https://fhir.example.org/r4#f", "https://:80"])
def test_urls_that_are_not_plain_base_urls_are_refused(url):
    with pytest.raises(FhirServerRefused):
        FhirServerPolicy().check(url, None)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "[::1]", "[fd00::1]", "[fe80::1]", "localhost"])
def test_loopback_private_and_reserved_addresses_are_refused_by_default(address):
    with pytest.raises(FhirServerRefused) as refused:
        FhirServerPolicy().check(f"http://{address}/fhir", None)
    assert refused.value.status == 400 and "CDS_FHIR_PRIVATE_NETWORKS" in str(refused.value)


def test_a_configured_private_network_is_allowed_and_only_that_one():
    policy = FhirServerPolicy(parse_networks("10.20.0.0/16, 127.0.0.1/32"))
    assert policy.check("http://10.20.3.4/fhir", None) == "http://10.20.3.4/fhir"
    assert policy.check("http://127.0.0.1:8080/fhir/", None) == "http://127.0.0.1:8080/fhir"
    with pytest.raises(FhirServerRefused):
        policy.check("http://10.21.0.1/fhir", None)
    with pytest.raises(FhirServerRefused):
        policy.check("http://127.0.0.2/fhir", None)


def test_development_mode_allows_loopback_but_not_other_private_ranges():
    policy = FhirServerPolicy(development=True)
    assert policy.check("http://localhost:9000/fhir", None) == "http://localhost:9000/fhir"
    assert policy.check("http://[::1]:9000/fhir", None) == "http://[::1]:9000/fhir"
    with pytest.raises(FhirServerRefused):
        policy.check("http://192.168.0.10/fhir", None)


def test_public_addresses_pass_the_address_check():
    assert FhirServerPolicy().check("https://93.184.215.14/fhir", None) == "https://93.184.215.14/fhir"


def test_with_an_issuer_only_its_listed_base_urls_pass():
    policy = FhirServerPolicy()
    allowed = frozenset({"https://93.184.215.14/r4"})
    assert policy.check("https://93.184.215.14/r4/", allowed) == "https://93.184.215.14/r4"
    with pytest.raises(FhirServerRefused) as refused:
        policy.check("https://93.184.215.14/other", allowed)
    assert refused.value.status == 401 and "not one of the FHIR servers configured" in str(refused.value)
    with pytest.raises(FhirServerRefused):
        policy.check("https://93.184.215.14/r4", frozenset())      # an issuer with no fhir_servers


def test_an_unresolvable_host_is_refused():
    with pytest.raises(FhirServerRefused) as refused:
        FhirServerPolicy().check("https://no-such-host.invalid/fhir", None)
    assert "does not resolve" in str(refused.value)


@pytest.mark.parametrize("text", ["10.0.0.0/33", "not-a-network", "10.0.0.0/8,,x"])
def test_a_malformed_network_list_is_a_clear_start_up_error(text):
    with pytest.raises(CdsError) as err:
        parse_networks(text)
    assert "CDS_FHIR_PRIVATE_NETWORKS" in str(err.value)


def test_the_trusted_issuer_file_carries_fhir_servers(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from cds.service.auth import AuthConfig

    pem = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pem").write_bytes(pem)
    path = tmp_path / "issuers.yaml"
    path.write_text("issuers:\n  - iss: https://ehr.example.org\n    public_key_file: k.pem\n"
                    "    fhir_servers: [https://FHIR.example.org/r4/]\n")
    issuer = AuthConfig.from_yaml(path).issuers["https://ehr.example.org"]
    assert issuer.fhir_servers == frozenset({"https://fhir.example.org/r4"})
    path.write_text("issuers:\n  - iss: https://ehr.example.org\n    public_key_file: k.pem\n"
                    "    fhir_servers:\n      - 'https://fhir.example.org/r4?x=1'\n")
    with pytest.raises(CdsError) as err:
        AuthConfig.from_yaml(path)
    assert "fhir_servers" in str(err.value) and str(path) in str(err.value)


def test_base_url_is_required_with_authentication_on():
    from cds.service.config import Settings

    with pytest.raises(CdsError) as err:
        Settings(auth_mode="required")
    assert "CDS_BASE_URL" in str(err.value)
    with pytest.raises(CdsError):
        Settings(auth_mode="required", base_url="cds.example.org")      # not a URL
    assert Settings(auth_mode="required", base_url="https://cds.example.org/").base_url == "https://cds.example.org"
    assert Settings(auth_mode="off").base_url is None
