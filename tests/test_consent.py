"""Which FHIR R4 Consents withhold genomic cards (cds.consent; shapes listed in docs/governance.md).

No Consent example in ../shared/fhir-examples carries a genetic provision, so these resources are
built here, element by element, on the FHIR R4 Consent structure (https://hl7.org/fhir/R4/consent.html:
status, scope, patient, provision.type/period/actor/action/securityLabel/purpose/class/provision)
with codes from HL7 Terminology: consentscope (patient-privacy, research), consentaction (use,
disclose), v3-ActReason (TREAT, HPAYMT), v3-ActCode (GDIS genetic disease information sensitivity,
HIV HIV/AIDS information sensitivity).
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from cds.consent import (DENIED, NO_RESTRICTION, NOT_PERMITTED, PERMITTED, UNREADABLE, ConsentDecision,
                         genomic_consent)

NOW = datetime(2026, 3, 1, 15, 0, tzinfo=timezone.utc)
GDIS = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "GDIS",
        "display": "genetic disease information sensitivity"}
HIV = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}
TREAT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
HPAYMT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HPAYMT"}


def action(code: str) -> dict:
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": code}]}


def consent(provision: dict | None, *, patient: str = "Patient/123", status: str = "active",
            scope: str = "patient-privacy", cid: str = "c1") -> dict:
    resource = {
        "resourceType": "Consent", "id": cid, "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": scope}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": patient},
        "dateTime": "2026-01-10",
    }
    if provision is not None:
        resource["provision"] = provision
    return resource


DENY_GENOMIC = {"type": "deny", "securityLabel": [GDIS]}


def decide(*resources, patient="123", require=False) -> ConsentDecision:
    return genomic_consent(list(resources), patient, require_consent=require, now=NOW)


def test_no_consent_means_no_restriction():
    assert decide() == ConsentDecision(True, NO_RESTRICTION, None)


def test_an_active_privacy_consent_denying_genetic_information_withholds_cards():
    assert decide(consent(DENY_GENOMIC)) == ConsentDecision(False, DENIED, "Consent/c1")


@pytest.mark.parametrize("patient", ["123", "Patient/123"])
def test_the_patient_may_be_named_with_or_without_the_type(patient):
    assert not decide(consent(DENY_GENOMIC), patient=patient).allowed


@pytest.mark.parametrize("reference", ["https://ehr.example.org/fhir/Patient/123",
                                       "Patient/123/_history/2"])
def test_absolute_and_versioned_patient_references_match(reference):
    assert not decide(consent(DENY_GENOMIC, patient=reference)).allowed


@pytest.mark.parametrize("changes", [
    {"status": "inactive"}, {"status": "draft"}, {"status": "rejected"}, {"status": "entered-in-error"},
    {"patient": "Patient/1234"}, {"patient": "Patient/12"},
    {"scope": "research"}, {"scope": "treatment"},
])
def test_consents_that_are_not_active_not_this_patients_or_not_about_privacy_do_not_apply(changes):
    assert decide(consent(DENY_GENOMIC, **changes)) == ConsentDecision(True, NO_RESTRICTION, None)


def test_a_nested_deny_is_an_exception_to_a_permitting_base_rule():
    provision = {"type": "permit", "provision": [DENY_GENOMIC]}
    assert decide(consent(provision)).reason == DENIED


def test_a_blanket_opt_out_withholds_and_a_genetic_permit_inside_it_allows():
    assert decide(consent({"type": "deny"})).reason == DENIED
    opt_out_but_genetics = {"type": "deny", "provision": [{"type": "permit", "securityLabel": [GDIS]}]}
    assert decide(consent(opt_out_but_genetics)) == ConsentDecision(True, PERMITTED, "Consent/c1")


def test_a_deny_of_other_sensitive_information_does_not_touch_genetics():
    assert decide(consent({"type": "deny", "securityLabel": [HIV]})).allowed


@pytest.mark.parametrize("restriction", [
    {"class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]},
    {"code": [{"coding": [{"system": "http://loinc.org", "code": "69548-6"}]}]},
    {"data": [{"meaning": "instance", "reference": {"reference": "Observation/cyp2c19"}}]},
    {"actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                     "code": "PRCP"}]}, "reference": {"reference": "Organization/other"}}]},
])
def test_provisions_this_module_does_not_recognise_say_nothing(restriction):
    # Documented limitation: a deny aimed at a class, code, data item or actor is not interpreted.
    assert decide(consent({"type": "deny", **restriction})).reason == NO_RESTRICTION


def test_purpose_must_include_treatment_for_the_deny_to_apply():
    assert decide(consent({**DENY_GENOMIC, "purpose": [HPAYMT]})).allowed
    assert not decide(consent({**DENY_GENOMIC, "purpose": [HPAYMT, TREAT]})).allowed


def test_action_must_include_use_or_access_for_the_deny_to_apply():
    assert decide(consent({**DENY_GENOMIC, "action": [action("disclose")]})).allowed
    assert not decide(consent({**DENY_GENOMIC, "action": [action("use")]})).allowed
    assert not decide(consent({**DENY_GENOMIC, "action": [action("access")]})).allowed


@pytest.mark.parametrize("period, applies", [
    ({"start": "2026-01-01"}, True),
    ({"end": "2026-03-01"}, True),                        # a date-only end includes that whole day
    ({"end": "2026-02-28"}, False),
    ({"end": "2026-03-01T14:59:59Z"}, False),
    ({"start": "2026-03-01T15:00:01Z"}, False),
    ({"start": "2026-03-01T16:00:00+02:00", "end": "2027"}, True),  # 14:00 UTC
    ({"start": "2027-01"}, False),
])
def test_the_provision_period_decides_when_it_applies(period, applies):
    assert decide(consent({**DENY_GENOMIC, "period": period})).allowed is not applies


def test_a_parent_period_bounds_its_exceptions():
    expired = {"type": "permit", "period": {"end": "2025-12-31"}, "provision": [DENY_GENOMIC]}
    assert decide(consent(expired)).allowed


def test_an_unreadable_applicable_consent_withholds_rather_than_guesses():
    decision = decide(consent({**DENY_GENOMIC, "period": {"start": "soon"}}))
    assert decision == ConsentDecision(False, UNREADABLE, "Consent/c1")
    assert decide(consent({"type": "maybe", "securityLabel": [GDIS]})).reason == UNREADABLE
    assert decide(consent("deny")).reason == UNREADABLE


def test_a_site_that_requires_consent_needs_an_active_permit():
    assert decide(require=True) == ConsentDecision(False, NOT_PERMITTED, None)
    assert decide(consent({"type": "permit", "securityLabel": [HIV]}), require=True).reason == NOT_PERMITTED
    assert decide(consent({"type": "permit", "securityLabel": [GDIS]}), require=True) == \
        ConsentDecision(True, PERMITTED, "Consent/c1")
    assert decide(consent({"type": "permit"}), require=True).allowed  # permits all information use
    assert decide(consent({"type": "permit", "securityLabel": [GDIS]}, status="inactive"), require=True).reason \
        == NOT_PERMITTED


def test_a_deny_wins_over_a_permit_in_another_consent():
    permit = consent({"type": "permit", "securityLabel": [GDIS]}, cid="permit")
    deny = consent(DENY_GENOMIC, cid="deny")
    assert decide(permit, deny, require=True) == ConsentDecision(False, DENIED, "Consent/deny")


def test_consents_inside_a_prefetch_bundle_are_read_and_other_resources_ignored():
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": {"resourceType": "Observation", "id": "o1", "status": "final"}},
                        {"resource": consent(DENY_GENOMIC)}, {"fullUrl": "urn:uuid:x"}]}
    assert decide(bundle, None, "junk").reason == DENIED


def test_the_input_is_not_modified():
    resource = consent({"type": "permit", "provision": [DENY_GENOMIC]})
    before = copy.deepcopy(resource)
    decide(resource)
    assert resource == before


def test_an_empty_patient_reference_is_a_programming_error():
    with pytest.raises(ValueError):
        genomic_consent([], "")
