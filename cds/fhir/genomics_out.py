"""Write pharmacogenomic results and their interpretation as HL7 Genomics Reporting (STU3) resources.

Profiles (canonical URLs of Genomics Reporting IG 3.0.0, http://hl7.org/fhir/uv/genomics-reporting/ —
its StructureDefinition pages and FSH sources, input/fsh/CGFindings.fsh, CGImplications.fsh,
CGGeneral.fsh at tag 3.0.0):
- genotype (Observation, LOINC 84413-4 "Genotype display name"; value: the genotype; component
  48018-6 "Gene studied" with the HGNC id),
- therapeutic-implication (Observation, tbd-codes-cs#therapeutic-implication; components: the
  predicted phenotype as `therapeutic-implication`, 51963-7 "Medication assessed", 93044-6 "Level of
  evidence", `conclusion-string`; derivedFrom the genotype),
- medication-recommendation (Task, status requested, intent proposal, reasonReference the
  implication; code from LOINC answer list LL4049-4 where one says what CPIC's flags say),
- genomic-report (DiagnosticReport, LOINC 51969-4, category GE), grouping the results.
Every Observation carries the two categories the IG's genomic base requires (laboratory, GE).

Every resource is validated with fhir.resources (R4B, as FHIR R4) before it is handed out
(`validated`): the dict written is the one that validated. A resource that does not validate is our
bug, and raises.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds.fhir.mappings import FhirMappings, default_mappings
from cds.fhir.valid import InvalidResource, validated  # noqa: F401  (part of this module's interface)

IG = "http://hl7.org/fhir/uv/genomics-reporting"
PROFILE_GENOTYPE = f"{IG}/StructureDefinition/genotype"
PROFILE_THERAPEUTIC_IMPLICATION = f"{IG}/StructureDefinition/therapeutic-implication"
PROFILE_MEDICATION_RECOMMENDATION = f"{IG}/StructureDefinition/medication-recommendation"
PROFILE_GENOMIC_REPORT = f"{IG}/StructureDefinition/genomic-report"
PROFILES = (PROFILE_GENOTYPE, PROFILE_THERAPEUTIC_IMPLICATION, PROFILE_MEDICATION_RECOMMENDATION,
            PROFILE_GENOMIC_REPORT)
TBD_CODES = f"{IG}/CodeSystem/tbd-codes-cs"
LOINC = "http://loinc.org"
HGNC = "http://www.genenames.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
RELATED_ARTIFACT = "http://hl7.org/fhir/StructureDefinition/workflow-relatedArtifact"
RECOMMENDED_ACTION = f"{IG}/StructureDefinition/recommended-action"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# Where a result came from, beside the IG's elements (the IG has none for a caller's call source).
CALL_SOURCE_EXTENSION = "urn:pgx-cds:pharmcat-call-source"

CATEGORIES = [
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]},
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}]},
]
GENOTYPE_CODE = {"coding": [{"system": LOINC, "code": "84413-4", "display": "Genotype display name"}]}
IMPLICATION_CODE = {"coding": [{"system": TBD_CODES, "code": "therapeutic-implication"}]}
REPORT_CODE = {"coding": [{"system": LOINC, "code": "51969-4", "display": "Genetic analysis report"}]}
_GENE_STUDIED = {"coding": [{"system": LOINC, "code": "48018-6", "display": "Gene studied [ID]"}]}
_MEDICATION_ASSESSED = {"coding": [{"system": LOINC, "code": "51963-7", "display": "Medication assessed"}]}
_EVIDENCE_LEVEL = {"coding": [{"system": LOINC, "code": "93044-6", "display": "Level of evidence"}]}
_CONCLUSION = {"coding": [{"system": TBD_CODES, "code": "conclusion-string"}]}
_IMPLICATION_COMPONENT = {"coding": [{"system": TBD_CODES, "code": "therapeutic-implication"}]}
# LOINC answer list LL4049-4 ("Medication usage suggestion"), as the IG 3.0.0 examples use it.
CONSIDER_ALTERNATIVE = {"system": LOINC, "code": "LA26421-0", "display": "Consider alternative medication"}
INDETERMINATE = {"system": INTERPRETATION, "code": "IND", "display": "Indeterminate"}

def gene_concept(gene: str, mappings: FhirMappings | None = None) -> dict[str, Any]:
    """A gene as the IG codes it: the HGNC id as code, the symbol as display (symbol only without an id)."""
    m = mappings or default_mappings()
    number = next((n for n, g in m.gene_by_hgnc_number.items() if g == gene), None)
    if number is None:
        return {"text": gene}
    return {"coding": [{"system": HGNC, "code": f"HGNC:{number}", "display": gene}], "text": gene}


def phenotype_concept(gene: str, phenotype: str, mappings: FhirMappings | None = None) -> dict[str, Any]:
    """A CPIC phenotype term, with the LOINC answer the IG uses for it where one means exactly it."""
    m = mappings or default_mappings()
    codings = [{"system": system, "code": code} for (system, code), term in m.phenotype_answers.items()
               if term == phenotype]
    concept: dict[str, Any] = {"text": f"{gene} {phenotype}"}
    if codings:
        concept["coding"] = codings[:1]
    return concept


def reference(kind: str, rid: str, display: str | None = None) -> dict[str, str]:
    ref = {"reference": rid if rid.startswith("urn:") else f"{kind}/{rid}"}
    if display:
        ref["display"] = display
    return ref


def genotype_observation(rid: str, gene: str, genotype: str, *, subject: dict | None = None,
                         effective: str | None = None, issued: str | None = None, method: str | None = None,
                         performer: str | None = None, indeterminate: str | None = None,
                         call_source: str | None = None, status: str = "final") -> dict[str, Any]:
    """One gene's genotype. `indeterminate`: why no phenotype can be given (the Observation is then
    interpreted as Indeterminate, with the reason as its note)."""
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "meta": {"profile": [PROFILE_GENOTYPE]},
        "status": status, "category": CATEGORIES, "code": GENOTYPE_CODE,
        "valueCodeableConcept": {"text": genotype},
        "component": [{"code": _GENE_STUDIED, "valueCodeableConcept": gene_concept(gene)}],
    }
    _common(obs, subject, effective, issued, performer)
    if method:
        obs["method"] = {"text": method}
    if indeterminate:
        obs["interpretation"] = [{"coding": [INDETERMINATE], "text": "Indeterminate"}]
        obs["note"] = [{"text": indeterminate}]
    if call_source:
        obs["extension"] = [{"url": CALL_SOURCE_EXTENSION, "valueCode": call_source}]
    return obs


def implication_observation(rid: str, phenotypes: list[tuple[str, str]], *, derived_from: Iterable[dict],
                            drug: tuple[str, str | None] | None = None, conclusion: str | None = None,
                            evidence: str | None = None, citation: dict | None = None,
                            subject: dict | None = None, effective: str | None = None,
                            narrative: str | None = None) -> dict[str, Any]:
    """A therapeutic implication: each gene's phenotype, the drug assessed (name, RxNorm), the source's
    recommendation as conclusion and its classification as level of evidence, the guideline as
    citation. One gene: its gene-studied component too, so a reader needs no lookup to attribute it."""
    components: list[dict[str, Any]] = [
        {"code": _IMPLICATION_COMPONENT, "valueCodeableConcept": phenotype_concept(gene, phenotype)}
        for gene, phenotype in phenotypes]
    if len({gene for gene, _ in phenotypes}) == 1:
        components.append({"code": _GENE_STUDIED, "valueCodeableConcept": gene_concept(phenotypes[0][0])})
    if drug:
        name, rxnorm = drug
        concept: dict[str, Any] = {"text": name}
        if rxnorm:
            concept["coding"] = [{"system": RXNORM, "code": rxnorm, "display": name}]
        components.append({"code": _MEDICATION_ASSESSED, "valueCodeableConcept": concept})
    if evidence:
        components.append({"code": _EVIDENCE_LEVEL, "valueCodeableConcept": {"text": evidence}})
    if conclusion:
        components.append({"code": _CONCLUSION, "valueString": conclusion})
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "meta": {"profile": [PROFILE_THERAPEUTIC_IMPLICATION]},
        "status": "final", "category": CATEGORIES, "code": IMPLICATION_CODE, "component": components,
    }
    derived = list(derived_from)
    if derived:
        obs["derivedFrom"] = derived
    if citation:
        obs["extension"] = [{"url": RELATED_ARTIFACT, "valueRelatedArtifact": {"type": "citation", **citation}}]
    if narrative:
        obs["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{_xhtml(narrative)}</div>'}
    _common(obs, subject, effective, None, None)
    return obs


def recommendation_task(rid: str, implication: dict, description: str, *, subject: dict | None = None,
                        alternative: bool = False, authored: str | None = None) -> dict[str, Any]:
    """A medication recommendation proposed from an implication. `alternative`: the source flags an
    alternative drug, coded LA26421-0; a dose change is left uncoded (the flags do not say which way),
    CPIC's own words being the description."""
    task: dict[str, Any] = {
        "resourceType": "Task", "id": rid, "meta": {"profile": [PROFILE_MEDICATION_RECOMMENDATION]},
        "status": "requested", "intent": "proposal", "description": description,
        "reasonReference": implication,
    }
    if alternative:
        task["code"] = {"coding": [CONSIDER_ALTERNATIVE]}
    if subject:
        task["for"] = subject
    if authored:
        task["authoredOn"] = authored
    return task


def genomic_report(rid: str, results: list[dict], tasks: list[dict], *, subject: dict | None = None,
                   issued: str | None = None, conclusion: str | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": rid, "meta": {"profile": [PROFILE_GENOMIC_REPORT]},
        "status": "final", "category": [CATEGORIES[1]], "code": REPORT_CODE, "result": results,
    }
    if tasks:
        report["extension"] = [{"url": RECOMMENDED_ACTION, "valueReference": t} for t in tasks]
    if subject:
        report["subject"] = subject
    if issued:
        report["issued"] = issued
    if conclusion:
        report["conclusion"] = conclusion
    return report


def bundle(entries: list[tuple[str, dict]], timestamp: str | None = None) -> dict[str, Any]:
    """A collection Bundle of (fullUrl, resource)."""
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "collection",
                           "entry": [{"fullUrl": url, "resource": r} for url, r in entries]}
    if timestamp:
        out["timestamp"] = timestamp
    return out


def _common(obs: dict, subject: dict | None, effective: str | None, issued: str | None, performer: str | None) -> None:
    if subject:
        obs["subject"] = subject
    if effective:
        obs["effectiveDateTime"] = effective
    if issued:
        obs["issued"] = issued
    if performer:
        obs["performer"] = [{"display": performer}]


def _xhtml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
