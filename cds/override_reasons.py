"""Why a clinician did not follow a card: the reasons a card offers, and how feedback's reasons are read.

Two code systems, side by side:
- our own (`urn:pgx-cds:override-reason`), offered since the first cards, so an EHR configured for
  them and the audit records that carry them keep their meaning;
- HL7's non-adherence reason codes of the CDS Hooks 3.0 ballot
  (http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes; HL7/cds-hooks,
  input/vocabulary/CodeSystem-non-adherence-reason-codes.json, drawn from AHRQ CDSiC "Approaches to
  Standardizing Override Reasons for Patient-Centered Clinical Decision Support"), so that reasons can
  be compared across organisations.

A card offers our five reasons and then the codes of HL7's "clinical selection" value set
(http://terminology.hl7.org/ValueSet/non-adherence-reason-clinical, the set the specification gives
services "as a starting point") that none of ours already stands for. Each of ours that means the
same as an HL7 code maps to it one to one (`HL7_EQUIVALENT`); "Genotype result disputed or outdated"
has no HL7 counterpart (the HL7 codes are about the recommendation, not about the result it rests on)
and stays ours alone. Feedback may carry either system (or an EHR's own, which is kept as sent); a code
of either of our known systems must be one of that system's codes.
"""
from __future__ import annotations

from dataclasses import dataclass

PRIVATE_SYSTEM = "urn:pgx-cds:override-reason"
HL7_SYSTEM = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"

# Ours, unchanged since the first cards (code → display).
PRIVATE_CODES: dict[str, str] = {
    "tolerated-before": "Patient has taken this drug before without problems",
    "will-monitor": "Will monitor response or drug levels",
    "result-disputed": "Genotype result disputed or outdated",
    "benefit-outweighs-risk": "Benefit outweighs risk; no suitable alternative",
    "not-applicable": "Recommendation does not apply to this indication",
}

# Every code of HL7's code system (CDS Hooks 3.0.0-ballot), code → display as HL7 writes it.
HL7_CODES: dict[str, str] = {
    "cds-not-applicable": "PC CDS does not apply to patient",
    "patient-ineligible": "Patient does not meet eligibility for recommended action",
    "indication-order-exists": "Patient has indication/order for intended action",
    "action-completed": "Recommended action was already completed",
    "action-unsuccessful": "Recommended action was previously unsuccessful",
    "action-performed-no-adverse-effect": "Intended action was performed previously without adverse effect",
    "action-not-priority": "Recommended action is not relevant or a priority in current state of health",
    "cds-suboptimal-context": "PC CDS delivered in suboptimal context",
    "limited-time": "Could not address recommended action due to limited time",
    "wrong-time-workflow": "PC CDS delivered at wrong time in workflow or patient lifecycle",
    "inappropriate-recipient": "PC CDS delivered to inappropriate recipient/role",
    "need-more-info": "Could not address recommended action due to need for more information/pending results/"
                      "pending consult",
    "recipient-disagrees-evidence": "Recipient disagrees with recommendation because of issues with the evidence",
    "does-not-align-latest-evidence": "Recommended action does not align with the latest evidence",
    "expert-contradicts": "Advice from expert contradicts the recommended action",
    "policy-contradicts": "Institutional policy/guideline contradicts the recommended action",
    "recipient-does-not-trust": "Recipient does not agree with or trust the recommended action",
    "recipient-concerns-outcomes": "Recipient has concerns regarding potential health outcomes",
    "risk-benefit-ratio": "Recipient assessment of risk/benefit ratio",
    "mitigate-risk-negative-outcome": "Action taken to mitigate risk of negative outcome",
    "likely-negative-health-outcomes": "Recommended action likely to have negative health outcomes",
    "patient-contraindication": "Patient has contraindication to recommended action",
    "does-not-align-preferences": "Recommendation does not align with patient preferences or values",
    "patient-fears-discomfort": "Patient fears discomfort from complying with recommended action",
    "patient-does-not-want-change": "Patient does not want to change behavior or believes the change is unnecessary",
    "cultural-religious-reason": "Patient has a cultural or religious reason for not following recommended action",
    "prefers-alternative": "Patient prefers an alternative approach or treatment",
    "patient-refuses": "Patient refuses/declines (no context given)*",
    "not-convenient-feasible": "Recommendation is not convenient or feasible",
    "inadequate-support": "Patient has inadequate caregiver/social support",
    "service-not-available": "Treatment or service is not practically available",
    "implementation-challenges": "Recommended action cannot be implemented due to technology/challenges",
    "too-costly-uncovered": "Recommended action is too costly or not covered by insurance",
    "recipient-does-not-understand": "Recipient does not understand the recommended action or know how to perform "
                                     "the recommended action",
    "comorbidity-disability": "Patient has co-morbidity or disability that hinders them from completing "
                              "recommended action",
}

# HL7's clinical selection value set, in its order.
HL7_CLINICAL_SELECTION: tuple[str, ...] = (
    "cds-not-applicable", "cds-suboptimal-context", "recipient-disagrees-evidence", "recipient-concerns-outcomes",
    "does-not-align-preferences", "not-convenient-feasible", "action-completed", "patient-contraindication",
    "patient-refuses", "too-costly-uncovered", "service-not-available", "recipient-does-not-understand",
)

# Ours → the HL7 code that says the same, where one does (HL7's definitions quoted in the comments).
HL7_EQUIVALENT: dict[str, str] = {
    # "A previously performed action that was the subject of the CDS did not cause harm"
    "tolerated-before": "action-performed-no-adverse-effect",
    # "superseded by an alternative measure taken to specifically avoid a known potential adverse event"
    "will-monitor": "mitigate-risk-negative-outcome",
    # "the potential risks of the action outweigh the anticipated benefits for this specific patient"
    "benefit-outweighs-risk": "risk-benefit-ratio",
    # "The CDS recommendation is irrelevant, completed, or the patient does not meet the criteria"
    "not-applicable": "cds-not-applicable",
}
PRIVATE_EQUIVALENT: dict[str, str] = {hl7: ours for ours, hl7 in HL7_EQUIVALENT.items()}


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


# What a card offers: ours first (as before), then HL7's clinical selection minus what ours stand for.
OVERRIDE_REASONS: list[dict[str, str]] = (
    [_coding(PRIVATE_SYSTEM, code, display) for code, display in PRIVATE_CODES.items()]
    + [_coding(HL7_SYSTEM, code, HL7_CODES[code]) for code in HL7_CLINICAL_SELECTION if code not in PRIVATE_EQUIVALENT]
)
KNOWN_SYSTEMS: dict[str, dict[str, str]] = {PRIVATE_SYSTEM: PRIVATE_CODES, HL7_SYSTEM: HL7_CODES}


@dataclass(frozen=True)
class ReasonCodes:
    """One override reason in both systems: ours and HL7's, where it has them."""

    private: str | None
    hl7: str | None

    @property
    def hl7_display(self) -> str | None:
        return HL7_CODES.get(self.hl7) if self.hl7 else None


def both_codes(system: str | None, code: str | None) -> ReasonCodes | None:
    """A feedback reason read in both systems; None for a reason of another system (an EHR's own)."""
    if system == PRIVATE_SYSTEM and code in PRIVATE_CODES:
        return ReasonCodes(code, HL7_EQUIVALENT.get(code))
    if system == HL7_SYSTEM and code in HL7_CODES:
        return ReasonCodes(PRIVATE_EQUIVALENT.get(code), code)
    return None


def unknown_code_problem(system: str, code: str) -> str | None:
    """Why a reason of one of our known systems cannot be accepted (a code the system does not have)."""
    codes = KNOWN_SYSTEMS.get(system)
    if codes is None or code in codes:
        return None
    return f"code {code!r} is not a code of {system}"
