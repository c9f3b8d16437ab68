"""PharmCAT's calls as HL7 Genomics Reporting (STU3) resources a FHIR server can load (`cds convert pharmcat`).

Per gene PharmCAT called:
- a genotype Observation: the diplotype as PharmCAT called it (allele names; several candidates joined
  by " or ", as PharmCAT's outside calls write them), PharmCAT's version and data version as its method,
  PharmCAT's `callSource` kept (extension urn:pgx-cds:pharmcat-call-source), the time PharmCAT wrote
  the file as issued; an Indeterminate call (several diplotypes, a combination, or no phenotype "n/a")
  is interpreted IND with PharmCAT's reason as its note;
- PharmCAT's phenotype (a CPIC term, or an HLA allele's status) as a therapeutic implication derived
  from that genotype, so the file says what PharmCAT said and a reader can check it against its own
  reading of the diplotype.
A gene PharmCAT has no result for gets no resource (absent, as "No Result" means), and everything not
written is listed with the reason (`Conversion.not_written`). No knowledge base is needed: this is
PharmCAT's output in another format, not our interpretation of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cds.fhir import genomics_out as out
from cds.fhir.interpretation import stable_id
from cds.fhir.mappings import FhirMappings, default_mappings
from cds.pharmcat.interpret import NOT_ASSIGNED
from cds.pharmcat.model import CALLED, INDETERMINATE, NO_RESULT, CalledDiplotype, GeneCall, PharmcatResults


@dataclass
class Conversion:
    resources: list[dict] = field(default_factory=list)
    not_written: list[str] = field(default_factory=list)


def pharmcat_resources(results: PharmcatResults, patient_id: str, *, lab: str | None = None,
                       mappings: FhirMappings | None = None) -> Conversion:
    """The resources of `results` for Patient/`patient_id`; `lab`: the performing laboratory's name."""
    m = mappings or default_mappings()
    conversion = Conversion()
    subject = {"reference": f"Patient/{patient_id}"}
    scope = f"Patient/{patient_id}|pharmcat|{results.timestamp or ''}"
    for call in results.calls:
        if call.status == NO_RESULT:
            conversion.not_written.append(f"{call.gene}: {call.reason}; no result, so no Observation")
            continue
        genotype = call.diplotype
        first = call.diplotypes[0]
        if genotype is None:
            _phenotype_alone(conversion, call, first, subject, scope, results, m)
            continue
        obs = out.genotype_observation(
            stable_id(scope, f"genotype|{call.gene}"), call.gene, genotype, subject=subject, issued=results.timestamp,
            method=results.method, performer=lab, indeterminate=_indeterminate(call, first),
            call_source=call.call_source)
        conversion.resources.append(out.validated(obs))
        if call.status == CALLED and not _indeterminate(call, first):
            _phenotype(conversion, call, first, [out.reference("Observation", obs["id"])], subject, scope, results, m)
    return conversion


def _indeterminate(call: GeneCall, first: CalledDiplotype) -> str | None:
    if call.status == INDETERMINATE:
        return f"PharmCAT: {call.reason}"
    keys = first.lookup_keys or first.phenotypes
    if keys and all(k == NOT_ASSIGNED for k in keys) and first.activity_score in (None, NOT_ASSIGNED):
        functions = f" (allele function: {', '.join(first.functions)})" if first.functions else ""
        return f"PharmCAT assigns {first.text}{functions} no phenotype ({NOT_ASSIGNED})"
    return None


def _phenotype(conversion: Conversion, call: GeneCall, first: CalledDiplotype, derived: list[dict], subject: dict,
               scope: str, results: PharmcatResults, m: FhirMappings) -> None:
    stated = [p for p in first.phenotypes if p != NOT_ASSIGNED]
    readable = [p for p in stated if _is_status(p) or p.casefold() in m.phenotype_by_text]
    for p in stated:
        if p not in readable:
            conversion.not_written.append(f"{call.gene}: PharmCAT's phenotype '{p}' is not a CPIC phenotype term; "
                                          "only the genotype is written")
    if not readable:
        return
    obs = out.implication_observation(
        stable_id(scope, f"phenotype|{call.gene}"), [(call.gene, p) for p in readable], derived_from=derived,
        subject=subject)
    if results.timestamp:
        obs["issued"] = results.timestamp
    obs["method"] = {"text": results.method}
    if first.activity_score:
        obs["note"] = [{"text": f"PharmCAT's {call.gene} activity score: {first.activity_score}"}]
    conversion.resources.append(out.validated(obs))


def _phenotype_alone(conversion: Conversion, call: GeneCall, first: CalledDiplotype, subject: dict, scope: str,
                     results: PharmcatResults, m: FhirMappings) -> None:
    """An outside call stating a phenotype without a diplotype: its phenotype alone (no genotype to
    derive it from); a score alone cannot be written (STU3 has no element for an activity score)."""
    if first.phenotypes:
        _phenotype(conversion, call, first, [], subject, scope, results, m)
    else:
        conversion.not_written.append(f"{call.gene}: stated as activity score {first.activity_score} without a "
                                      "diplotype or phenotype; STU3 has no element for an activity score")


def _is_status(phenotype: str) -> bool:
    words = phenotype.split()
    return len(words) == 2 and words[0].startswith("*") and words[1].lower() in ("positive", "negative")
