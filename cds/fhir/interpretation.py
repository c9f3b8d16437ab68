"""The interpretation a card carries, as Genomics Reporting (STU3) resources, from the decision core's
plain data (an `Evaluation`: the interpreted results and each drug's matched recommendations) — never
from a card's text. Used by `cds explain --fhir`, `cds screen --fhir-out` and the SMART page's download.

Per patient:
- a genotype Observation per result stated as a diplotype (an Indeterminate one interpreted IND, the
  reason as its note), with the result's date and laboratory where known;
- a therapeutic implication per matched recommendation: each gene's phenotype (an allele status for an
  HLA gene), the drug, the source's recommendation text as conclusion, its classification as level of
  evidence, its population as treatment context, the guideline as citation, and the knowledge base
  and guideline versions as method; derived from the genotypes (or the source Observations) it rests on;
- a medication-recommendation Task where the advice changes prescribing (the curators flag an
  alternative drug or a dose change; for CPIC's release-only recommendations, which carry no flags,
  where the card policy counts them as actionable), with the source's own words;
- a result without a genotype (a phenotype, score or allele status stated alone) that no implication
  carries: an implication of its phenotype alone, so the results on file all travel;
- a genomic-report DiagnosticReport listing them.
Every resource is validated with fhir.resources (cds.fhir.genomics_out.validated).

Limits, said here and in docs/fhir-writing.md: STU3 has no element for an activity score, so a score
stated without its diplotype travels as its phenotype; a recommendation keyed on several genes names
no single gene studied, so a reader attributes its phenotypes through the genotypes it derives from.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from cds.engine import Evaluation, Match
from cds.facts import GenomicResult
from cds.fhir import genomics_out as out
from cds.genotype import Interpretation, attribute_gene
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT
from cds.populations import GENERAL, population_words

_NAMESPACE = uuid.UUID("5b0a6f0e-6a52-4c55-9b7e-2f1d1c6a8f3d")   # pgx-cds resource ids (uuid5)


def stable_id(scope: str, key: str) -> str:
    """The same id for the same result or advice of the same patient (`scope`) on every run, so a
    re-import replaces rather than duplicates; nothing of the scope can be read back from it."""
    return str(uuid.uuid5(_NAMESPACE, f"{scope}\x1f{key}"))


@dataclass
class FhirInterpretation:
    """The resources of one patient's interpretation, in writing order, each already validated."""

    resources: list[dict] = field(default_factory=list)

    def of_type(self, rtype: str) -> list[dict]:
        return [r for r in self.resources if r["resourceType"] == rtype]

    def bundle(self, timestamp: str | None = None) -> dict:
        """A collection Bundle; entries are named urn:uuid:<id> and refer to each other by those names."""
        return out.validated(out.bundle([(f"urn:uuid:{r['id']}", r) for r in self.resources], timestamp))


@dataclass
class _Writer:
    kb: KnowledgeBase
    evaluation: Evaluation
    evidence: Mapping[str, GenomicResult]
    subject: dict | None
    scope: str
    issued: str | None
    as_bundle: bool
    is_actionable: Callable
    link_sources: bool
    made: FhirInterpretation = field(default_factory=FhirInterpretation)
    genotypes: dict[str, list[dict]] = field(default_factory=dict)     # gene → references to its genotypes

    def ref(self, rtype: str, rid: str) -> dict:
        return out.reference(rtype, f"urn:uuid:{rid}" if self.as_bundle else rid)

    def add(self, resource: dict) -> dict:
        self.made.resources.append(out.validated(resource))
        return resource


def interpretation_resources(kb: KnowledgeBase, evaluation: Evaluation, *,
                             evidence: Mapping[str, GenomicResult] | None = None,
                             patient_ref: str | None = None, scope: str = "", issued: str | None = None,
                             as_bundle: bool = False, link_sources: bool = True) -> FhirInterpretation:
    """The resources for `evaluation`. `patient_ref` ("Patient/123", or a pseudonym's) is their subject;
    `scope` makes the ids (stable_id) differ per patient; `as_bundle`: references as urn:uuid;
    `link_sources`: refer to the FHIR Observations the results were read from (off for pseudonymous
    output, since their ids may carry the patient's)."""
    from cds.cards import is_actionable  # the card policy's own test of "changes prescribing" without flags

    w = _Writer(kb, evaluation, evidence or {}, {"reference": patient_ref} if patient_ref else None,
                scope or (patient_ref or ""), issued, as_bundle, is_actionable, link_sources)
    for gene, items in sorted(evaluation.interpretations.items()):
        for interp in items:
            if interp.stated_as == "diplotype" and interp.diplotype:
                _genotype(w, gene, interp)
    implied: set[str] = set()
    tasks: list[dict] = []
    for drug in evaluation.drugs:
        for match in drug.matches:
            implication = _implication(w, drug.drug, drug.rxnorm, match)
            if implication is None:
                continue
            implied.update(attribute_gene(a) for a, v in match.recommendation.lookup.items() if v != NO_RESULT)
            # (a reader attributes each phenotype of an implication to its gene: cds/fhir/genomics.py)
            task = _task(w, drug.drug, match, implication)
            if task is not None:
                tasks.append(task)
    for gene, items in sorted(evaluation.interpretations.items()):
        if gene not in w.genotypes and gene not in implied:
            _phenotype_only(w, gene, items)
    observations = [w.ref("Observation", r["id"]) for r in w.made.of_type("Observation")]
    task_refs = [w.ref("Task", t["id"]) for t in tasks]
    if observations:
        w.add(out.genomic_report(stable_id(w.scope, "report"), observations, task_refs, subject=w.subject,
                                 issued=issued))
    return w.made


def _genotype(w: _Writer, gene: str, interp: Interpretation) -> None:
    found = _evidence(w, interp)
    rid = stable_id(w.scope, f"genotype|{gene}|{interp.diplotype}")
    if any(r["id"] == rid for r in w.made.resources):
        return
    obs = out.genotype_observation(
        rid, gene, interp.diplotype or "", subject=w.subject,
        effective=fhir_datetime(found.effective) if found and found.effective else None, issued=w.issued,
        performer=found.performer if found else None,
        indeterminate=interp.reason if interp.indeterminate else None)
    w.add(obs)
    w.genotypes.setdefault(gene, []).append(w.ref("Observation", rid))


def _implication(w: _Writer, drug: str, rxnorm: str | None, match: Match) -> dict | None:
    rec, guideline = match.recommendation, match.guideline
    phenotypes = []
    for attribute, value in rec.lookup.items():
        if value == NO_RESULT:
            continue                # CPIC's advice for a gene with no result: no phenotype to state
        gene = attribute_gene(attribute)
        phenotypes.append((gene, _phenotype_of(w, gene, attribute, value)))
    if not phenotypes:
        return None
    genes = sorted({g for g, _ in phenotypes})
    derived = [ref for g in genes for ref in w.genotypes.get(g, [])] or _sources(w, genes)
    evidence = rec.classification or ("not graded" if guideline.source == "DPWG" else "no classification")
    citation = {"display": guideline.name, "citation": guideline.reference(), "url": guideline.url}
    obs = out.implication_observation(
        stable_id(w.scope, f"implication|{drug}|{guideline.id}|{rec.id}|{match.score or ''}"), phenotypes,
        derived_from=derived, drug=(drug, rxnorm), conclusion=rec.recommendation,
        evidence=f"{guideline.source} {evidence}", citation=citation, subject=w.subject)
    obs["method"] = {"text": f"pgx-cds knowledge base {w.kb.version}; {guideline.source} {guideline.name}, "
                             f"{guideline.version}; recommendation {rec.id}"}
    if rec.population and rec.population != GENERAL:
        obs["component"].append({"code": {"coding": [{"system": out.LOINC, "code": "81259-4"}],
                                           "text": "Phenotypic treatment context"},
                                  "valueCodeableConcept": {"text": population_words(rec.population)}})
    if match.score is not None:
        obs["note"] = [{"text": f"{guideline.source}'s advice if the {match.score_gene} activity score is "
                                f"{match.score}: the result states a phenotype without its activity score, "
                                "and the score decides which advice applies."}]
    return w.add(obs)


def _task(w: _Writer, drug: str, match: Match, implication: dict) -> dict | None:
    rec = match.recommendation
    flags = rec.flags
    if flags is not None and not (flags.alternate_drug_available or flags.dosing_information):
        return None
    if flags is None and not w.is_actionable(rec, w.kb):
        return None
    task = out.recommendation_task(
        stable_id(w.scope, f"task|{drug}|{match.guideline.id}|{rec.id}|{match.score or ''}"),
        w.ref("Observation", implication["id"]), f"{drug}: {rec.recommendation}", subject=w.subject,
        alternative=bool(flags and flags.alternate_drug_available), authored=w.issued)
    return w.add(task)


def _phenotype_only(w: _Writer, gene: str, items: list[Interpretation]) -> None:
    """A gene's results that no genotype and no implication carries (a phenotype or score alone)."""
    phenotypes = []
    for interp in items:
        for attribute, value in interp.lookup.items():
            entry = (gene, _phenotype_of(w, gene, attribute, value))
            if entry not in phenotypes:
                phenotypes.append(entry)
    if not phenotypes:
        return
    w.add(out.implication_observation(stable_id(w.scope, f"phenotype|{gene}"), phenotypes,
                                      derived_from=_sources(w, [gene]), subject=w.subject))


def _phenotype_of(w: _Writer, gene: str, attribute: str, value: str) -> str:
    """What a lookup value says of the gene: an allele status as is, an activity score as its phenotype."""
    if attribute != gene:
        return value                                          # "HLA-B *57:01" → "*57:01 positive"
    interpreter = w.kb.interpreters.get(gene)
    return interpreter.phenotype_of_key(value) if interpreter else value


def _sources(w: _Writer, genes: list[str]) -> list[dict]:
    """The FHIR Observations the results of `genes` were read from (when they were read from FHIR)."""
    refs: list[dict] = []
    if not w.link_sources:
        return refs
    for gene in genes:
        for interp in w.evaluation.interpretations.get(gene, []):
            for sid in interp.source_ids:
                for part in sid.split("+"):                     # a paired haplotype names both halves
                    if part.startswith("Observation/") and {"reference": part} not in refs:
                        refs.append({"reference": part})
    return refs


def fhir_datetime(when: datetime) -> str:
    """A FHIR dateTime: with its zone; a date alone where a result gave only a date (read as midnight)."""
    if when.tzinfo is None:
        return when.date().isoformat() if when.time() == time() else when.replace(tzinfo=UTC).isoformat()
    return when.isoformat()


def _evidence(w: _Writer, interp: Interpretation) -> GenomicResult | None:
    return next((w.evidence[s] for s in interp.source_ids if s in w.evidence), None)
