"""Does a patient's FHIR R4 Consent allow this service to use their genomic data?

A pure function over raw FHIR JSON (dicts), so the service can call it on prefetch and on resources
fetched from the FHIR server alike. Raw JSON is read field by field rather than parsed with
fhir.resources: a strict parse that fails on an unrelated field would make us ignore a patient's
refusal, which is the one mistake this module must not make.

Recognised shapes (docs/governance.md has the same list with examples). A Consent counts when:
  - `resourceType` is "Consent" (found directly or inside a Bundle's `entry[].resource`),
  - `status` is "active",
  - `scope` has the coding http://terminology.hl7.org/CodeSystem/consentscope|patient-privacy
    ("Agreement to collect, access, use or disclose (share) information"; the other scopes, adr,
    research and treatment, are not about our use of data),
  - `patient.reference` names the patient ("Patient/123", or an absolute URL ending in it).

Its provisions (R4: the root provision is the base rule, nested provisions are exceptions to it) are
read for one question: "may genetic information be used for treatment now?". A provision speaks to it
when all of these hold for it and for each provision above it:
  - `period`, if present, contains now;
  - `purpose`, if present, includes http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT;
  - `action`, if present, includes http://terminology.hl7.org/CodeSystem/consentaction|use or |access;
  - no `actor` (we cannot tell whether the person in front of the EHR is the named actor);
and it covers genomic data, that is either
  - `securityLabel` includes http://terminology.hl7.org/CodeSystem/v3-ActCode|GDIS
    ("genetic disease information sensitivity", value set v3-ActInformationSensitivityPolicy, part
    of the R4 security-labels value set bound to Consent.provision.securityLabel), or
  - it restricts no data at all (no securityLabel, class, code or data): a blanket deny or permit.
A nested provision that speaks overrides its parent; among siblings a deny wins. Across Consents a
deny wins over a permit. Provisions restricted by other labels, classes, codes or data references are
not recognised (they say nothing); an active, in-scope Consent for the patient whose provision
fields cannot be read (e.g. an unparseable period) withholds genomic cards: we do not guess.

Sources: FHIR R4 Consent (https://hl7.org/fhir/R4/consent.html); HL7 Terminology code systems
consentscope, consentaction, v3-ActReason (TREAT "treatment") and v3-ActCode (GDIS), see
https://terminology.hl7.org/ValueSet-v3-ActInformationSensitivityPolicy.html.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

log = logging.getLogger(__name__)

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
PRIVACY_SCOPE = "patient-privacy"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
TREATMENT_PURPOSE = "TREAT"
ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"
USE_ACTIONS = frozenset({"use", "access"})
LABEL_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
GENETIC_LABEL = "GDIS"

# ConsentDecision.reason values
DENIED = "consent-denied"                # an active Consent denies genomic data use
PERMITTED = "consent-permitted"          # an active Consent permits it
NOT_PERMITTED = "consent-required-missing"  # site requires consent and none permits
NO_RESTRICTION = "no-consent-restriction"   # nothing recognised says no
UNREADABLE = "consent-unreadable"        # an applicable Consent could not be read: withhold


@dataclass(frozen=True)
class ConsentDecision:
    allowed: bool               # may genotype-based cards be shown?
    reason: str                 # one of the reason codes above
    consent_id: str | None = None  # "Consent/<id>" that decided, when one did


class _Unreadable(Exception):
    """A field this decision depends on is malformed."""


def genomic_consent(resources: Iterable[dict] | None, patient_ref: str, require_consent: bool = False,
                    now: datetime | None = None) -> ConsentDecision:
    """Decide whether genomic data of `patient_ref` ("Patient/123" or "123") may be used.

    `resources` is any mix of FHIR resources and Bundles (prefetch values, search results); resources
    other than Consent are ignored. `require_consent` is the site setting: when true, genomic data is
    used only under an active Consent that permits it.
    """
    now = now or datetime.now(UTC)
    patient = _patient_key(patient_ref)
    permit_id: str | None = None
    for consent in _consents(resources or ()):
        if not _is_for(consent, patient) or consent.get("status") != "active" or not _in_privacy_scope(consent):
            continue
        consent_id = f"Consent/{consent.get('id')}" if consent.get("id") else None
        try:
            ruling = _ruling(consent.get("provision"), now)
        except _Unreadable as err:
            log.warning("active Consent %s unreadable (%s): genomic cards withheld", consent_id, err)
            return ConsentDecision(False, UNREADABLE, consent_id)
        if ruling == "deny":
            return ConsentDecision(False, DENIED, consent_id)
        if ruling == "permit" and permit_id is None:
            permit_id = consent_id or "Consent/(no id)"
    if permit_id is not None:
        return ConsentDecision(True, PERMITTED, permit_id)
    if require_consent:
        return ConsentDecision(False, NOT_PERMITTED, None)
    return ConsentDecision(True, NO_RESTRICTION, None)


def _consents(resources: Iterable[Any]) -> Iterator[dict]:
    for res in resources:
        if not isinstance(res, dict):
            continue
        if res.get("resourceType") == "Bundle":
            entries = res.get("entry")
            if not isinstance(entries, list):
                entries = []
            yield from _consents(e.get("resource") for e in entries if isinstance(e, dict))
        elif res.get("resourceType") == "Consent":
            yield res


def _patient_key(ref: str) -> str:
    ref = (ref or "").strip()
    if not ref:
        raise ValueError("patient_ref is empty")
    return ref if ref.startswith("Patient/") else f"Patient/{ref}"


_HISTORY = re.compile(r"/_history/[^/]+$")


def _is_for(consent: dict, patient: str) -> bool:
    subject = consent.get("patient")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(ref, str):
        return False
    ref = _HISTORY.sub("", ref.strip())
    return ref == patient or ref.endswith("/" + patient)


def _codings(value: Any) -> Iterator[dict]:
    """Codings of a CodeableConcept, a list of them, a Coding or a list of Codings."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict):
            continue
        if "coding" in item:
            yield from (c for c in item["coding"] if isinstance(c, dict)) if isinstance(item["coding"], list) else ()
        else:
            yield item


def _has_code(value: Any, system: str, codes: str | frozenset[str]) -> bool:
    wanted = {codes} if isinstance(codes, str) else codes
    return any(c.get("system") == system and c.get("code") in wanted for c in _codings(value))


def _in_privacy_scope(consent: dict) -> bool:
    return _has_code(consent.get("scope"), SCOPE_SYSTEM, PRIVACY_SCOPE)


def _ruling(provision: Any, now: datetime) -> str | None:
    """'deny', 'permit' or None: what this provision and its exceptions say about our use."""
    if provision is None:
        return None
    if not isinstance(provision, dict):
        raise _Unreadable("provision is not an object")
    if not _applies(provision, now):
        return None
    ruling = provision.get("type") if _covers_genomic(provision) else None
    if ruling not in (None, "deny", "permit"):
        raise _Unreadable(f"provision.type {ruling!r}")
    children = provision.get("provision") or []
    if not isinstance(children, list):
        raise _Unreadable("provision.provision is not a list")
    exceptions = {_ruling(child, now) for child in children} - {None}
    if exceptions:
        ruling = "deny" if "deny" in exceptions else "permit"
    return ruling


def _applies(provision: dict, now: datetime) -> bool:
    if provision.get("actor"):
        return False
    period = provision.get("period")
    if period is not None:
        if not isinstance(period, dict):
            raise _Unreadable("provision.period is not an object")
        start, end = period.get("start"), period.get("end")
        if start is not None and now < _instant(start, upper=False):
            return False
        if end is not None and now >= _instant(end, upper=True):
            return False
    if provision.get("purpose") and not _has_code(provision["purpose"], PURPOSE_SYSTEM, TREATMENT_PURPOSE):
        return False
    return not provision.get("action") or _has_code(provision["action"], ACTION_SYSTEM, USE_ACTIONS)


def _covers_genomic(provision: dict) -> bool:
    if _has_code(provision.get("securityLabel"), LABEL_SYSTEM, GENETIC_LABEL):
        return True
    return not any(provision.get(key) for key in ("securityLabel", "class", "code", "data"))


_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


def _instant(value: Any, *, upper: bool) -> datetime:
    """A FHIR dateTime as an aware datetime; a partial date is widened to its first or next instant."""
    if not isinstance(value, str):
        raise _Unreadable(f"period bound {value!r}")
    m = _PARTIAL.match(value)
    if m:
        year, month, day = int(m[1]), int(m[2] or 1), int(m[3] or 1)
        try:
            first = datetime.combine(date(year, month, day), time(), UTC)
        except ValueError as err:
            raise _Unreadable(f"period bound {value!r}") from err
        if not upper:
            return first
        if m[3]:
            return first + timedelta(days=1)
        if m[2]:
            return first.replace(year=year + (month == 12), month=month % 12 + 1)
        return first.replace(year=year + 1)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise _Unreadable(f"period bound {value!r}") from err
    if parsed.tzinfo is None:  # FHIR requires a zone when time is given; read a missing one as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
