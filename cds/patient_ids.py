"""Patient ids in text: the bare id of a patient reference, and removing an id from free text.

Every writer of de-identified text (the audit store, the service's log, screening outputs) and the
FHIR readers that name another patient's resources use these, so an id is recognised one way.
"""
from __future__ import annotations

import re
import string
from collections.abc import Callable

PATIENT_PLACEHOLDER = "[patient]"
OTHER_PATIENT_PLACEHOLDER = "[other patient]"

# `Patient/X`, `.../fhir/Patient/X` and `Patient/X/_history/2` all name patient X.
_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([^/\s]+)(?:/_history/[^/\s]+)?/?$")


def normalised_patient_id(patient_id: str) -> str:
    """The bare logical id, so that `X` and `Patient/X` get one pseudonym and are scrubbed alike."""
    text = patient_id.strip()
    match = _PATIENT_REFERENCE.search(text)
    return match.group(1) if match else text


def scrubber(patient_id: str | None, placeholder: str = PATIENT_PLACEHOLDER) -> Callable[[str | None], str | None]:
    """Replace the raw patient id wherever it appears in free text or ids, except inside a longer word.
    The id is normalised first: for `Patient/X` the bare `X` goes too (and with it `Patient/X`)."""
    if not patient_id:
        return lambda text: text
    patient_id = normalised_patient_id(patient_id)
    if not patient_id:
        return lambda text: text
    width = len(patient_id)

    def scrub(text: str | None) -> str | None:
        if not text or patient_id not in text:  # the usual case
            return text
        # Not next to a letter or digit: "19" in "CYP2C19" is not the patient, but "pat1" in
        # "Observation/pat1-cyp" is (servers build resource ids from patient ids). A scan, not a regex:
        # a screening run scrubs for 100k different ids, and compiling a pattern for each was 2% of it.
        parts: list[str] = []
        kept, at = 0, text.find(patient_id)
        while at >= 0:
            end = at + width
            if (at == 0 or text[at - 1] not in _WORD) and (end == len(text) or text[end] not in _WORD):
                parts += (text[kept:at], placeholder)
                kept = end
                at = text.find(patient_id, end)
            else:
                at = text.find(patient_id, at + 1)
        parts.append(text[kept:])
        return "".join(parts)

    return scrub


_WORD = frozenset(string.ascii_letters + string.digits)   # ASCII only, as the rule has always been


def other_patients_resource(name: str, other_patient: str | None) -> str:
    """How we write a resource of another patient (its `Observation/<id>` or the like): without that
    patient's id, which servers often build resource ids from ("Observation/<patient>-cyp2c19"). Only
    the request's own patient id was scrubbed from what we write; this one must not be written at all."""
    return scrubber(other_patient, OTHER_PATIENT_PLACEHOLDER)(name) or name
