"""Read pharmacogenomic results from FHIR R4 JSON into `GenomicResult` facts.

Shapes read (examples of each in docs/fhir-reading.md):
- HL7 Genomics Reporting IG STU1–STU3: genotype (84413-4), haplotype (84414-2, paired into a
  diplotype), therapeutic implication (phenotype in a component; gene from what it is derived from),
  and the FHIR R4 core examples (geneticsGene extension, SNOMED "Genotype determination").
- Laboratory-style Observations whose code names the gene (by a code in `lab_codes` of
  guidelines/fhir-mappings.yaml, or by the gene symbol in the code's text or display) and whose value
  is the diplotype, the phenotype, an activity score or an HLA allele's presence.
- DiagnosticReports (results referenced or contained) and Bundles of any of these, nested or not.

Every resource is read from its JSON with the type of each field checked; one that cannot be read is
skipped with a reason (and a logged warning) and never stops the others. Full fhir.resources R4B
validation costs about 0.25 ms per Observation, so it runs only to explain a skip, or for every
genomic resource when `validate=True` (its findings become warnings; the resource is still read).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cds.facts import GenomicResult
from cds.fhir import values
from cds.fhir.mappings import FhirMappings, LabCode, default_mappings
from cds.fhir.resources import (
    Entry,
    Index,
    as_list,
    codings,
    collect,
    concept_keys,
    concept_texts,
    effective_of,
    is_concept,
    patient_key,
    r4b_problem,
    text_of,
)
from cds.memo import Memo
from cds.patient_ids import other_patients_resource

log = logging.getLogger("cds.fhir")

_HLA_IN_TEXT = re.compile(r"(?<![A-Za-z0-9])(HLA-[A-Z0-9]+)\s*\*\s*(\d{2,4}(?::\d{2,4}){0,3}[A-Z]?)", re.I)
_HGVS = re.compile(r"^[cgm]\.\d")      # an HGVS variant name ("m.1555A>G", "c.1905+1G>A")
_SCORE = re.compile(r"^\s*(≥|>=)?\s*\d+(?:\.\d+)?\s*$")
# Status order used when two haplotypes with different statuses are paired: the pair is only as good
# as its weaker half (an unknown status counts as weakest).
_STATUS_RANK = {s: i for i, s in enumerate(
    ["entered-in-error", "cancelled", "unknown", "registered", "preliminary", "final", "amended", "corrected"])}


@dataclass(frozen=True)
class Unreadable:
    """A genomic result on file for this patient that could not be read: which gene (when the reader
    could tell), which resource, and why (never the value or the patient). Its status, date (its own,
    else its report's) and the HLA allele its code names, when known, let a newer unreadable result
    supersede older readable ones (cds/fhir/selection.py)."""

    gene: str | None
    source_id: str
    reason: str
    status: str | None = None
    effective: datetime | None = None
    allele: str | None = None
    # no gene could be told: the medications it assesses (RxNorm codes, names), so a card for those says it
    drugs: tuple[str, ...] = ()


@dataclass
class GenomicReading:
    """What was read. `skipped`: one reason per genomic resource that could not be read or was not
    used (another patient's). `unreadable`: the skipped results of this patient, with their gene, so a
    card can say a result is on file but could not be interpreted. `warnings`: resources read despite
    a fault (not valid FHIR R4, an unknown gene code beside a known symbol)."""

    results: list[GenomicResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)


def read_genomic_results(resources: Iterable[dict] | dict, mappings: FhirMappings | None = None, *,
                         validate: bool = False, patient_ref: str | None = None) -> GenomicReading:
    """Read every pharmacogenomic result in `resources` (Bundles, DiagnosticReports, Observations,
    in any mix; other resource types are passed over). With `patient_ref` ("Patient/123"), results
    whose subject is another patient are skipped with that reason. A reader made for this call: the
    decision core reads with the Advisor's reader (cds.pipeline), which remembers across requests."""
    return GenomicReader(mappings or default_mappings()).read(resources, validate=validate, patient_ref=patient_ref)


@dataclass
class _Obs:
    entry: Entry
    kind: str                         # genotype | haplotype | phenotype | therapeutic-implication | lab
    lab: LabCode | None = None
    gene: str | None = None
    gene_problem: str | None = None

    # several genes studied (CYP2C9 and VKORC1 components): read per gene its value names
    genes_stated: tuple[str, ...] = ()

    @property
    def rid(self) -> str:
        # a resource without id (a transaction Bundle's urn:uuid entry) is named by its fullUrl
        return self.entry.key or self.entry.full_url or "Observation (no id)"

    @property
    def res(self) -> dict:
        return self.entry.resource


@dataclass(frozen=True)
class Fact:
    """What one value states: a diplotype (with the phenotype the lab states beside it, if any), a
    phenotype, an allele's presence, or an activity score. Only the fields it states are set."""

    diplotype: str | None = None
    phenotype: str | None = None
    allele: str | None = None
    allele_present: bool | None = None
    activity_score: str | None = None

    def stated(self) -> dict[str, Any]:
        """The fields it states, as GenomicResult's keyword arguments."""
        return {k: v for k, v in (("diplotype", self.diplotype), ("phenotype", self.phenotype),
                                  ("allele", self.allele), ("allele_present", self.allele_present),
                                  ("activity_score", self.activity_score)) if v is not None}

    def same_as(self, other: Fact) -> bool:
        """The same statement: the same fields, a diplotype compared as a pair of alleles."""
        mine, theirs = self.stated(), other.stated()
        if mine.keys() != theirs.keys():
            return False
        if self.diplotype is not None and other.diplotype is not None:
            return values.same_diplotype(self.diplotype, other.diplotype)
        return mine == theirs


@dataclass(frozen=True)
class TextReading:
    """One text read as a fact, or why it could not be (`problem`)."""

    fact: Fact | None
    problem: str | None = None


@dataclass(frozen=True)
class ValueReading:
    """An Observation's value read: the fact and the text it was read from, or why not (`problem`)."""

    fact: Fact | None
    text: str | None = None
    problem: str | None = None


def _unread(problem: str) -> ValueReading:
    return ValueReading(None, None, problem)


@dataclass
class _Haplotype:
    obs: _Obs
    gene: str
    allele: str
    zygosity: str | None
    text: str


class GenomicReader:
    """Built once with the mappings; `read` is called per request."""

    def __init__(self, mappings: FhirMappings):
        self.m = mappings
        # A lab's diplotype text reads the same for every patient: parsed once per (text, gene). The
        # facts it gives are only read, never changed. Bounded at ~2 MB: 100k synthetic patients carry
        # 13k distinct value texts, of which the 4,096 most frequent are 94% of all results (measured:
        # 20k entries cost a screening worker 3.5 MB more for a few per cent of its time).
        self._diplotype_texts: Memo[TextReading] = Memo(4_096)

    # --- the request ------------------------------------------------------------------------------

    def read(self, resources: Iterable[dict] | dict, *, validate: bool = False,
             patient_ref: str | None = None) -> GenomicReading:
        out = GenomicReading()
        problems: list[str] = []
        entries = collect(resources, problems)
        for p in problems:
            self._skip(out, p, None)
        index = Index(entries)
        if patient_ref is not None:
            entries = self._this_patients(entries, index, patient_key(patient_ref), out)
        observations: dict[int, _Obs] = {}
        for e in entries:
            if e.type != "Observation":
                continue
            if not isinstance(e.resource.get("code"), dict):   # cannot even tell what it is
                self._skip(out, f"{e.key or 'Observation (no id)'}: code is missing or not a CodeableConcept", None)
                continue
            obs = self._classify(e)
            if obs is not None:
                observations[id(e)] = obs
        report_dates = self._link_reports(entries, index, out, validate)
        for obs in observations.values():
            self._find_gene(obs, out)
        haplotypes: list[_Haplotype] = []
        for obs in observations.values():
            skipped = len(out.skipped)
            try:
                self._read_one(obs, observations, index, report_dates, out, haplotypes)
            except Exception:  # a reader bug must not sink the request; record it like a bad resource
                log.exception("reading %s failed", obs.rid)
                self._skip(out, f"{obs.rid}: could not be read (internal error, see log)", obs)
            if validate and len(out.skipped) == skipped:   # a skip already says why
                problem = r4b_problem(obs.res)
                if problem:
                    self._warn(out, f"{obs.rid} does not validate as FHIR R4 ({problem}); read from its JSON")
        self._pair(haplotypes, observations, index, report_dates, out)
        self._unrecognised_results(observations, out)
        self._reports_read_as_nothing(entries, observations, out)
        return out

    def _unrecognised_results(self, observations: dict[int, _Obs], out: GenomicReading) -> None:
        """A result of a kind the reader does not read (a variant call, a phase relation) is the evidence
        under a genotype: passed over where a result of its gene was read, said where none was."""
        read = {r.gene for r in out.results}
        for obs in observations.values():
            if obs.kind != "unrecognised":
                continue
            if obs.gene in read:
                self._note(out, f"{obs.rid} ({obs.gene}): not read on its own (e.g. a variant call); a {obs.gene} "
                                "result was read beside it")
            else:
                self._skip(out, f"{obs.rid}{f' ({obs.gene})' if obs.gene else ''}: {self._unrecognised(obs)}", obs)

    def _reports_read_as_nothing(self, entries: list[Entry], observations: dict[int, _Obs],
                                 out: GenomicReading) -> None:
        """A Genomics Report none of whose results is one the reader reads (the IG STU3 Bundle-bundle-CYP2C19:
        variant calls 69548-6 and a phase relation 82120-7 only) is said, never read as nothing."""
        members: dict[int, list[Entry]] = {}
        for e in entries:
            for dr in e.reports:
                members.setdefault(id(dr), []).append(e)
        for dr in (e for e in entries if e.type == "DiagnosticReport"):
            if not self._is_genomic_report(dr.resource):
                continue
            held = members.get(id(dr), [])
            if held and not any(id(m) in observations and observations[id(m)].kind != "unrecognised" for m in held):
                name = dr.key or dr.full_url or "DiagnosticReport (no id)"
                self._note(out, f"{name}: none of its {len(held)} results is a genotype, haplotype or phenotype the "
                                "reader reads (e.g. variant calls, a phase relation); no pharmacogenomic result read "
                                "from it")

    def _is_genomic_report(self, res: dict) -> bool:
        keys = set(concept_keys(res.get("code")))
        for category in as_list(res.get("category")):
            keys |= set(concept_keys(category))
        return bool(keys & (set(self.m.genomic_report_codes) | set(self.m.genomic_report_categories)))

    def is_genomic(self, resource: Any) -> bool:
        """Whether the reader takes `resource` for a pharmacogenomic result (an Observation whose code
        is a genotype, haplotype, phenotype or implication code, a lab code, or names a gene)."""
        if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
            return False
        if not isinstance(resource.get("code"), dict):
            return True          # skipped with a reason: it cannot even say what it is
        return self._classify(Entry(resource, None)) is not None

    # --- the right patient ---------------------------------------------------------------------------

    def _this_patients(self, entries: list[Entry], index: Index, wanted: str | None,
                       out: GenomicReading) -> list[Entry]:
        """Leave out Observations and DiagnosticReports whose subject is another patient (and what such a
        report contains). A subject that names no patient we can compare (an identifier only, a urn:uuid
        not in the input) is kept: the search that found it was for this patient."""
        foreign: set[int] = set()
        for e in entries:
            if e.type not in ("Observation", "DiagnosticReport"):
                continue
            if e.container is not None and id(e.container) in foreign:
                foreign.add(id(e))
                continue
            subject = e.resource.get("subject")
            ref = subject.get("reference") if isinstance(subject, dict) else None
            if not isinstance(ref, str) or not ref.strip():
                continue
            target = index.resolve(subject, e)
            if target is not None and target.type == "Patient":
                key = target.key
            elif ref.startswith(("urn:", "#")):
                continue
            else:
                key = patient_key(ref) if "/" in ref else None
                if key is None:
                    key = "(not a Patient)"
            if key != wanted:
                foreign.add(id(e))
                name = other_patients_resource(e.key or e.type + " (no id)", key)
                self._skip(out, f"{name}: its subject is not the patient of this request; not used", None)
        return [e for e in entries if id(e) not in foreign]

    # --- classification and gene --------------------------------------------------------------------

    def _classify(self, e: Entry) -> _Obs | None:
        code = e.resource.get("code")
        keys = concept_keys(code)
        for k in keys:
            kind = self.m.observation_kinds.get(k)
            if kind:
                return _Obs(e, kind)
        for k in keys:
            lab = self.m.lab_codes.get(k)
            if lab:
                return _Obs(e, "lab", lab)
        if self._symbols(concept_texts(code)):
            return _Obs(e, "lab", LabCode(gene="", states="any", allele=None))
        if self._states_a_gene(e.resource):
            # a genomic result of a kind the reader does not read (a variant call, a phase relation, the R4
            # core haplotype examples' 55233-1): read with a stated reason, never passed over in silence
            return _Obs(e, "unrecognised")
        return None

    def _states_a_gene(self, res: dict) -> bool:
        return any(isinstance(c, dict) and any(k in self.m.gene_studied_components for k in concept_keys(c.get("code")))
                   for c in as_list(res.get("component"))) or \
            any(isinstance(x, dict) and x.get("url") in self.m.gene_extensions for x in as_list(res.get("extension")))

    def _symbols(self, texts: list[str]) -> set[str]:
        found = set()
        for t in texts:
            for m in self.m.gene_symbol_pattern.finditer(t):
                found.add(self.m.gene_by_folded_symbol[m.group(1).casefold()])
        return found

    def _gene_from_concept(self, concept: Any) -> tuple[str | None, str | None, str | None]:
        """(gene, problem, note) from a gene CodeableConcept: HGNC code first, then symbol."""
        coded, shown, unknown = set(), set(), []
        for system, code, display in codings(concept):
            if system in self.m.gene_code_systems and code:
                number = code.upper().removeprefix("HGNC:")
                gene = self.m.gene_by_hgnc_number.get(number)
                if gene:
                    coded.add(gene)
                else:
                    unknown.append(code)
            if display and display.casefold() in self.m.gene_by_folded_symbol:
                shown.add(self.m.gene_by_folded_symbol[display.casefold()])
        text = text_of(concept.get("text")) if isinstance(concept, dict) else None
        if text and text.casefold() in self.m.gene_by_folded_symbol:
            shown.add(self.m.gene_by_folded_symbol[text.casefold()])
        if coded:
            if len(coded) > 1:
                return None, f"gene coded as {' and '.join(sorted(coded))}", None
            gene = next(iter(coded))
            if shown - {gene}:
                return None, f"gene coded as {gene} but displayed as {', '.join(sorted(shown - {gene}))}", None
            return gene, None, None
        if len(shown) == 1:
            gene = next(iter(shown))
            note = (f"gene code {', '.join(unknown)} is not a known HGNC id of {gene}; gene read from its display"
                    if unknown else None)
            return gene, None, note
        if len(shown) > 1:
            return None, f"gene displayed as {' and '.join(sorted(shown))}", None
        if unknown:
            return None, f"gene {', '.join(unknown)} is not one the reader knows", None
        return None, None, None

    def _find_gene(self, obs: _Obs, out: GenomicReading) -> None:
        found: dict[str, str] = {}
        problems: list[str] = []
        res = obs.res
        for comp in as_list(res.get("component")):
            if isinstance(comp, dict) and any(k in self.m.gene_studied_components
                                              for k in concept_keys(comp.get("code"))):
                self._gene_source(comp.get("valueCodeableConcept"), "gene-studied component", found, problems, obs, out)
        for ext in as_list(res.get("extension")):
            if isinstance(ext, dict) and ext.get("url") in self.m.gene_extensions:
                self._gene_source(ext.get("valueCodeableConcept"), "gene extension", found, problems, obs, out)
        if obs.lab and obs.lab.gene:
            found.setdefault(obs.lab.gene, "lab code")
        if not found and not problems:
            named = self._symbols(concept_texts(res.get("code")))
            if len(named) == 1:
                found[next(iter(named))] = "code text"
            elif len(named) > 1:
                problems.append(f"its code names several genes ({', '.join(sorted(named))})")
        if problems:
            obs.gene_problem = problems[0]
        elif len(found) > 1:
            obs.gene_problem = "gene stated as " + " and ".join(f"{g} ({w})" for g, w in sorted(found.items()))
            obs.genes_stated = tuple(sorted(found))
        elif found:
            obs.gene = next(iter(found))

    def _gene_source(self, concept: Any, where: str, found: dict, problems: list, obs: _Obs,
                     out: GenomicReading) -> None:
        gene, problem, note = self._gene_from_concept(concept)
        if problem:
            problems.append(f"{where}: {problem}")
        elif gene:
            found.setdefault(gene, where)
            if note:
                self._warn(out, f"{obs.rid}: {note}")
        else:
            problems.append(f"{where} has no gene code or symbol")

    # --- reports -------------------------------------------------------------------------------------

    def _link_reports(self, entries: list[Entry], index: Index, out: GenomicReading,
                      validate: bool) -> dict[int, datetime]:
        """Mark each Observation with the DiagnosticReports it belongs to (its results, what they are
        derived from or group, and contained Observations). Returns each report's date by id(entry)."""
        dates: dict[int, datetime] = {}
        contained: dict[int, list[Entry]] = {}
        for e in entries:
            if e.container is not None and e.type == "Observation":
                contained.setdefault(id(e.container), []).append(e)
        for dr in (e for e in entries if e.type == "DiagnosticReport"):
            if validate:
                problem = r4b_problem(dr.resource)
                if problem:
                    self._warn(out,
                               f"{dr.key or 'DiagnosticReport'} does not validate as FHIR R4 ({problem}); read from "
                               "its JSON")
            when, _ = effective_of(dr.resource)
            if when:
                dates[id(dr)] = when
            todo = [index.resolve(r, dr) for r in as_list(dr.resource.get("result"))]
            todo += contained.get(id(dr), [])
            seen: set[int] = set()
            while todo:
                member = todo.pop()
                if member is None or member.type != "Observation" or id(member) in seen:
                    continue
                seen.add(id(member))
                member.reports.append(dr)
                for ref in as_list(member.resource.get("derivedFrom")) + as_list(member.resource.get("hasMember")):
                    todo.append(index.resolve(ref, member))
        return dates

    def _effective(self, obs: _Obs, report_dates: dict[int, datetime], out: GenomicReading) -> datetime | None:
        when, bad = effective_of(obs.res)
        if bad:
            self._warn(out, f"{obs.rid}: a date is not a FHIR dateTime; {'used the next one' if when else 'no date'}")
        if when is None:
            for dr in obs.entry.reports:      # a result without a date takes its report's
                if id(dr) in report_dates:
                    return report_dates[id(dr)]
        return when

    # --- one Observation -----------------------------------------------------------------------------

    def _read_one(self, obs: _Obs, observations: dict[int, _Obs], index: Index, report_dates, out, haplotypes) -> None:
        if obs.kind == "therapeutic-implication" and obs.gene is None and self._per_gene(obs, report_dates, out):
            return
        self._gene_of_derived(obs, observations, index)
        if obs.kind == "unrecognised":
            return      # said after the others are read, where nothing else of its gene is (_unrecognised_results)
        if obs.gene is None and obs.genes_stated:
            self._read_per_gene(obs, observations, index, report_dates, out, haplotypes)
            return
        if obs.gene is None:
            self._skip(out, f"{obs.rid}: {obs.gene_problem or 'no gene stated'}", obs)
            return
        gene = obs.gene
        if self._said_indeterminate(obs, gene, report_dates, out):
            return
        if obs.kind == "haplotype":
            self._read_haplotype(obs, gene, out, haplotypes)
            return
        read = self._value_of(obs, gene, report_dates, out)
        if read.fact is None:
            self._skip(out, f"{obs.rid} ({gene} {obs.kind}): {read.problem}", obs)
            return
        when = self._effective(obs, report_dates, out)
        if read.fact.diplotype is not None and read.fact.phenotype is not None:
            # A diplotype with the phenotype the lab derived from it: two statements, checked against
            # each other by the interpreter (a disagreement is a conflict).
            out.results.append(self._result(obs, gene, when, read.text, Fact(diplotype=read.fact.diplotype)))
            out.results.append(self._result(obs, gene, when, read.text, Fact(phenotype=read.fact.phenotype)))
            return
        out.results.append(self._result(obs, gene, when, read.text, read.fact))

    def _gene_of_derived(self, obs: _Obs, observations: dict[int, _Obs], index: Index) -> None:
        """An implication or phenotype that names no gene takes it from what it is derived from."""
        if obs.kind in ("therapeutic-implication", "phenotype") and obs.gene is None and obs.gene_problem is None:
            self._gene_from_parents(obs, observations, index)
            if obs.gene is None and (obs.gene_problem or "").startswith("no gene stated"):
                # the lab's own statement names the gene ("CYP2C19 Rapid Metabolizer", genomics-operations'
                # implications): read it, though the genotype it is derived from is not here
                obs.gene = self._gene_in_phenotype(obs) or None

    def _said_indeterminate(self, obs: _Obs, gene: str, report_dates, out: GenomicReading) -> bool:
        """Its source says it is Indeterminate (interpretation IND) and why, in a note (what pgx-cds
        writes for a caller's ambiguous or combination call): that, not our reading of the value."""
        reason = _stated_indeterminate(obs.res)
        if reason is None:
            return False
        out.results.append(GenomicResult(gene=gene, source_id=obs.rid, status=_status(obs.res),
                                         phenotype="Indeterminate", effective=self._effective(obs, report_dates, out),
                                         text=next((t for _, t in self._candidates(obs.res)), None),
                                         performer=performer_of(obs.res), reason=reason))
        return True

    def _read_haplotype(self, obs: _Obs, gene: str, out: GenomicReading, haplotypes: list[_Haplotype]) -> None:
        read = self._haplotype_value(obs, gene)
        if read.fact is None or read.fact.allele is None:
            self._skip(out, f"{obs.rid} ({gene} haplotype): {read.problem}", obs)
        else:
            haplotypes.append(_Haplotype(obs, gene, read.fact.allele, self._zygosity(obs.res), read.text or ""))

    def _value_of(self, obs: _Obs, gene: str, report_dates, out: GenomicReading) -> ValueReading:
        if obs.kind == "genotype":
            return self._genotype_value(obs, gene)
        if obs.kind == "phenotype":
            return self._phenotype_value([obs.res], gene)
        if obs.kind == "therapeutic-implication":
            return self._implication_value(obs, gene, report_dates, out)
        return self._lab_value(obs, gene)

    def _implication_value(self, obs: _Obs, gene: str, report_dates, out: GenomicReading) -> ValueReading:
        parts = [c for c in as_list(obs.res.get("component"))
                 if isinstance(c, dict) and any(k in self.m.phenotype_components for k in concept_keys(c.get("code")))]
        if gene in self.m.allele_status_genes:
            read = self._implied_status(parts[:1], gene)
            if read.fact is not None:                     # "HLA-B *57:01 positive", one result per allele
                for part in parts[1:]:
                    self._implication_status(obs, part, gene, _status(obs.res), report_dates, out)
                return read
        return self._phenotype_value([*parts, obs.res], gene)

    def _result(self, obs: _Obs, gene: str, when: datetime | None, text: str | None, fact: Fact) -> GenomicResult:
        return GenomicResult(gene=gene, source_id=obs.rid, status=_status(obs.res), effective=when, text=text,
                             performer=performer_of(obs.res), **fact.stated())

    def _per_gene(self, obs: _Obs, report_dates, out: GenomicReading) -> bool:
        """An implication over several genes whose phenotype components each begin with their gene
        ("CYP2D6 Poor Metabolizer", "HLA-B *15:02 negative"): each read for its gene. False (nothing
        read) unless there are several genes and every such component names exactly one and reads."""
        parts = [c for c in as_list(obs.res.get("component"))
                 if isinstance(c, dict) and any(k in self.m.phenotype_components for k in concept_keys(c.get("code")))]
        found: list[tuple[str, Fact, str]] = []
        for part in parts:
            texts = concept_texts(part.get("valueCodeableConcept"))
            named = {self.m.gene_by_folded_symbol[m.group(1).casefold()]
                     for t in texts if (m := self.m.gene_symbol_pattern.match(t))}
            if len(named) != 1:
                return False
            gene = next(iter(named))
            read = (self._implied_status([part], gene) if gene in self.m.allele_status_genes
                    else self._phenotype_value([part], gene))
            if read.fact is None:
                return False
            found.append((gene, read.fact, read.text or ""))
        if len({gene for gene, _, _ in found}) < 2:
            return False          # one gene: read as any implication (its gene from what it derives from)
        when = self._effective(obs, report_dates, out)
        for gene, fact, text in found:
            out.results.append(self._result(obs, gene, when, text, fact))
        return True

    def _gene_in_phenotype(self, obs: _Obs) -> str | None:
        """The one gene a phenotype component's text names before a phenotype term of it ("CYP2C19 Rapid
        Metabolizer"), else None."""
        texts = [t for c in as_list(obs.res.get("component")) if isinstance(c, dict)
                 and any(k in self.m.phenotype_components for k in concept_keys(c.get("code")))
                 for t in concept_texts(c.get("valueCodeableConcept")) + [text_of(c.get("valueString")) or ""] if t]
        named = {g for t in texts for g in self._symbols([t]) if values.phenotype_term(t, g, self.m)}
        return next(iter(named)) if len(named) == 1 else None

    def _read_per_gene(self, obs: _Obs, observations, index: Index, report_dates, out, haplotypes) -> None:
        """A result stating several genes studied (the Genomics Reporting IG's genotype-1a: CYP2C9 and VKORC1
        components, value "CYP2C9 *2/*5"): each gene its value names is read from it; a gene it does not
        name is noted (audited), since the value states nothing about it."""
        texts = [t for _, t in self._candidates(obs.res)]
        named = [g for g in obs.genes_stated if self._symbols(texts) & {g}]
        if not named:
            self._skip(out, f"{obs.rid}: {obs.gene_problem}; its value names none of them", obs)
            return
        for gene in named:
            self._read_one(replace(obs, gene=gene, gene_problem=None, genes_stated=()), observations, index,
                           report_dates, out, haplotypes)
        for gene in obs.genes_stated:
            if gene not in named:
                self._note(out, f"{obs.rid}: states {gene} as a gene studied, but its value gives no {gene} result")

    def _unrecognised(self, obs: _Obs) -> str:
        code = next((f"{c} {d}" if d else c for _, c, d in codings(obs.res.get("code")) if c), "its code")
        return (f"{code} is not a genotype, haplotype or phenotype result the reader reads (e.g. a single variant "
                "call or a phase relation), and no result of its gene was read beside it")

    def _gene_from_parents(self, obs: _Obs, observations: dict[int, _Obs], index: Index) -> None:
        """A therapeutic implication names no gene: take it from the results it is derived from, when
        they are all here and all of one gene."""
        refs = as_list(obs.res.get("derivedFrom"))
        if not refs:
            obs.gene_problem = "no gene stated and nothing it is derived from"
            return
        genes, missing = set(), 0
        for ref in refs:
            target = index.resolve(ref, obs.entry)
            parent = observations.get(id(target)) if target is not None else None
            if parent is None or parent.gene is None:
                missing += 1
            else:
                genes.add(parent.gene)
        if len(genes) > 1:
            obs.gene_problem = (f"derived from results for several genes ({', '.join(sorted(genes))}); "
                                "the phenotype cannot be attributed")
        elif missing:
            obs.gene_problem = "no gene stated and the results it is derived from are not all available"
        elif genes:
            obs.gene = next(iter(genes))

    # --- values --------------------------------------------------------------------------------------

    def _candidates(self, res: dict) -> list[tuple[str, str]]:
        """(origin, text) pairs a value may be read from: coded allele names, displays, text, string."""
        out = self._value_candidates(res)
        if not out and not any(k.startswith("value") for k in res):
            # No value: some labs put the genotype in a component coded as a genotype (84413-4).
            for comp in as_list(res.get("component")):
                if isinstance(comp, dict) and any(self.m.observation_kinds.get(k) == "genotype"
                                                  for k in concept_keys(comp.get("code"))):
                    out += self._value_candidates(comp)
        return out

    def _value_candidates(self, res: dict) -> list[tuple[str, str]]:
        out = []
        concept = res.get("valueCodeableConcept")
        if is_concept(concept):
            for system, code, display in codings(concept):
                if code and system in self.m.gl_string_systems:
                    out.append(("gl", code))
                elif code and "*" in code and system in self.m.allele_name_systems:
                    out.append(("code", code))   # an allele name, not an accession (PV00155, HGG00041)
                if display:
                    out.append(("display", display))
            text = text_of(concept.get("text"))
            if text:
                out.append(("text", text))
        string = text_of(res.get("valueString"))
        if string:
            out.append(("string", string))
        return out

    @staticmethod
    def _one(readings: list[tuple[Fact, str]], problems: list[str], what: str) -> ValueReading:
        """All readable candidates must say the same thing; the first problem explains a failure."""
        if not readings:
            return _unread(problems[0] if problems else f"no {what} value")
        first, text = readings[0]
        for other, _ in readings[1:]:
            if not first.same_as(other):
                return _unread(f"the value's codings and text disagree about the {what}")
        return ValueReading(first, text)

    def _genotype_value(self, obs: _Obs, gene: str) -> ValueReading:
        readings: list[tuple[Fact, str]] = []
        problems: list[str] = []
        hla = gene in self.m.allele_status_genes
        for origin, text in self._candidates(obs.res):
            if origin == "gl":
                parsed = values.gl_string(text, gene, self.m)
                read = TextReading(Fact(diplotype=parsed.value)) if parsed.value else TextReading(None, parsed.problem)
            elif hla:
                read = self._hla_text(text, gene, self._code_allele(obs, gene), single_means_present=True)
            else:
                read = self._diplotype_text(text, gene)
            if read.fact:
                readings.append((read.fact, text))
            elif origin != "code":      # a code that is not an allele name (ClinVar id, PV number) is fine
                problems.append(read.problem or "")
        return self._one(readings, problems, "genotype")

    def _haplotype_value(self, obs: _Obs, gene: str) -> ValueReading:
        readings: list[tuple[Fact, str]] = []
        problems: list[str] = []
        for origin, text in self._candidates(obs.res):
            parsed = values.single_allele(text, gene, self.m)
            if parsed.value:
                readings.append((Fact(allele=parsed.value), text))
            elif origin != "code":
                problems.append(parsed.problem or "")
        return self._one(readings, problems, "haplotype")

    def _implication_status(self, obs: _Obs, part: dict, gene: str, status: str | None, report_dates,
                            out: GenomicReading) -> None:
        """One more allele's status stated by an HLA gene's implication (each component its own result)."""
        read = self._implied_status([part], gene)
        if read.fact is None:
            self._skip(out, f"{obs.rid} ({gene} therapeutic-implication): {read.problem}", obs)
            return
        out.results.append(GenomicResult(gene=gene, source_id=obs.rid, status=status, text=read.text,
                                         effective=self._effective(obs, report_dates, out),
                                         performer=performer_of(obs.res), **read.fact.stated()))

    def _implied_status(self, parts: list[dict], gene: str) -> ValueReading:
        """An allele-status gene's implication states the allele's status as text ("HLA-B *57:01 positive")."""
        readings: list[tuple[Fact, str]] = []
        problems: list[str] = []
        for part in parts:
            for text in concept_texts(part.get("valueCodeableConcept")):
                read = self._hla_text(text, gene, None, single_means_present=False)
                if read.fact and read.fact.allele_present is not None:
                    readings.append((read.fact, text))
                else:
                    problems.append(read.problem or "the value does not state an allele's presence")
        return self._one(readings, problems, "allele status")

    def _phenotype_value(self, holders: list[dict], gene: str) -> ValueReading:
        """The phenotype in the values of `holders` (components, or the Observation itself)."""
        readings: list[tuple[Fact, str]] = []
        problems: list[str] = []
        for holder in holders:
            concept = holder.get("valueCodeableConcept")
            if is_concept(concept):
                self._coded_phenotypes(concept, gene, readings, problems)
            string = text_of(holder.get("valueString"))
            if string:
                term = values.phenotype_term(string, gene, self.m)
                if term:
                    readings.append((Fact(phenotype=term), string))
                else:
                    problems.append("the text is not a CPIC phenotype term")
        if not readings and not problems and any(is_concept(h.get("valueCodeableConcept")) for h in holders):
            problems.append("the coded value is not a known phenotype answer or CPIC term")
        if problems and problems[0].startswith("answer ") and not readings:
            return _unread(problems[0])
        return self._one(readings, problems, "phenotype")

    def _coded_phenotypes(self, concept: Any, gene: str, readings: list[tuple[Fact, str]],
                          problems: list[str]) -> None:
        """The phenotypes a CodeableConcept states: its codings the mappings answer, then its texts."""
        for system, code, display in codings(concept):
            if system and code and (system, code) in self.m.phenotype_answers:
                term = self.m.phenotype_answers[(system, code)]
                if term is None:
                    problems.insert(0, f"answer {code} is not a CPIC phenotype (guidelines/fhir-mappings.yaml)")
                else:
                    readings.append((Fact(phenotype=term), display or term))
        for text in concept_texts(concept):
            term = values.phenotype_term(text, gene, self.m)
            if term:
                readings.append((Fact(phenotype=term), text))

    def _lab_value(self, obs: _Obs, gene: str) -> ValueReading:
        states = obs.lab.states if obs.lab else "any"
        if states == "genotype":
            return self._genotype_value(obs, gene)
        if states == "phenotype":
            return self._phenotype_value([obs.res], gene)
        if states == "activity-score":
            return self._score_value(obs.res)
        if states == "allele-status":
            return self._presence_value(obs, gene, obs.lab.allele if obs.lab else None)
        # any: decide from the value
        res = obs.res
        if gene in self.m.allele_status_genes and (isinstance(res.get("valueBoolean"), bool)
                                                   or self._code_allele(obs, gene)):
            read = self._presence_value(obs, gene, self._code_allele(obs, gene))
            if read.fact or isinstance(res.get("valueBoolean"), bool):
                return read
        readings: list[tuple[Fact, str]] = []
        problems: list[str] = []
        for origin, text in self._candidates(res):
            found = self._any_text(text, gene, obs)
            if found.fact:
                readings.append((found.fact, text))
            elif origin != "code":
                problems.append(found.problem or "")
        if not readings and not problems:
            return _unread("no value")
        return self._one(readings, problems, "result")

    def _any_text(self, text: str, gene: str, obs: _Obs) -> TextReading:
        if gene in self.m.allele_status_genes:
            return self._hla_text(text, gene, self._code_allele(obs, gene), single_means_present=False)
        term = values.phenotype_term(text, gene, self.m)
        if term:
            return TextReading(Fact(phenotype=term))
        stripped = text.strip()
        if "/" in stripped or "*" in stripped or values.has_spelling(stripped, gene, self.m) \
                or _HGVS.match(stripped.split()[-1]):
            return self._diplotype_text(stripped, gene)
        return TextReading(None, "the value is not a diplotype, a CPIC phenotype term or an allele status")

    def _diplotype_text(self, text: str, gene: str) -> TextReading:
        """A diplotype, with the phenotype the lab states beside it in parentheses ('*2/*3 (Poor
        Metabolizer)'): both are kept, so the interpreter can check one against the other."""
        return self._diplotype_texts.get((text, gene), lambda: self._read_diplotype_text(text, gene))

    def _read_diplotype_text(self, text: str, gene: str) -> TextReading:
        rest, stated = values.split_stated_phenotype(text, gene, self.m)
        parsed = values.diplotype(rest, gene, self.m)
        if not parsed.value:
            return TextReading(None, parsed.problem)
        return TextReading(Fact(diplotype=parsed.value, phenotype=stated))

    def _hla_text(self, text: str, gene: str, code_allele: str | None, *,
                  single_means_present: bool) -> TextReading:
        """'HLA-B*57:01 positive' / 'Negative' (allele from the code) / '*57:01/*08:01' / 'HLA-B*15:02'."""
        split = values.presence_word(text, self.m)
        if split is not None:
            return self._stated_presence(split, gene, code_allele)
        if "/" in text:
            parsed = values.diplotype(text, gene, self.m)
            return TextReading(Fact(diplotype=parsed.value)) if parsed.value else TextReading(None, parsed.problem)
        if single_means_present:
            parsed = values.single_allele(text, gene, self.m)
            return (TextReading(Fact(allele=parsed.value, allele_present=True)) if parsed.value
                    else TextReading(None, parsed.problem))
        return TextReading(None, f"the value is not a {gene} typing or allele status")

    def _stated_presence(self, split: tuple[str, bool], gene: str, code_allele: str | None) -> TextReading:
        """An allele's presence as the text states it ('HLA-B*57:01 positive', or 'Negative' of the
        allele the code names)."""
        allele_text, present = split
        if allele_text:
            parsed = values.single_allele(allele_text, gene, self.m)
            if parsed.value is None:
                return TextReading(None, parsed.problem)
            allele = parsed.value
        elif code_allele:
            allele = code_allele
        else:
            return TextReading(None, f"presence is stated but not which {gene} allele")
        if code_allele and allele != code_allele:
            return TextReading(None, f"the value names {allele} but the code names {code_allele}")
        return TextReading(Fact(allele=allele, allele_present=present))

    def _presence_value(self, obs: _Obs, gene: str, allele: str | None) -> ValueReading:
        if not allele:
            return _unread(f"the code does not say which {gene} allele")
        res = obs.res
        if isinstance(res.get("valueBoolean"), bool):
            present = res["valueBoolean"]
            return ValueReading(Fact(allele=allele, allele_present=present), str(present).lower())
        readings: list[tuple[Fact, str]] = []
        problems: list[str] = []
        concept = res.get("valueCodeableConcept")
        for system, code, display in codings(concept):
            if system and code and (system, code) in self.m.presence_answers:
                readings.append((Fact(allele=allele, allele_present=self.m.presence_answers[(system, code)]),
                                 display or code))
        for origin, text in self._candidates(res):
            if origin in ("gl", "code"):
                continue
            read = self._hla_text(text, gene, allele, single_means_present=False)
            if read.fact and read.fact.allele_present is not None:
                readings.append((read.fact, text))
            else:
                problems.append(read.problem or "the value does not state presence")
        if not readings and not problems:
            return _unread("no value")
        return self._one(readings, problems, "allele status")

    def _score_value(self, res: dict) -> ValueReading:
        quantity = res.get("valueQuantity")
        number = quantity.get("value") if isinstance(quantity, dict) else None
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            text = str(number)
            return ValueReading(Fact(activity_score=text), text)
        string = text_of(res.get("valueString"))
        if string and _SCORE.match(string):
            return ValueReading(Fact(activity_score=string.replace(">=", "≥").replace(" ", "")), string)
        return _unread("the value is not an activity score (a number)")

    def _code_allele(self, obs: _Obs, gene: str) -> str | None:
        """The HLA allele a lab code names: from lab_codes, or written in the code ('HLA-B*57:01')."""
        if obs.lab and obs.lab.allele:
            return obs.lab.allele
        for text in concept_texts(obs.res.get("code")):
            m = _HLA_IN_TEXT.search(text)
            if m and m.group(1).upper() == gene.upper():
                return values.respell("*" + m.group(2), gene, self.m)
        return None

    def _zygosity(self, res: dict) -> str | None:
        for comp in as_list(res.get("component")):
            if not isinstance(comp, dict) or not any(k in self.m.zygosity_components
                                                     for k in concept_keys(comp.get("code"))):
                continue
            concept = comp.get("valueCodeableConcept")
            for k in concept_keys(concept):
                if k in self.m.zygosity_answers:
                    return self.m.zygosity_answers[k]
            for text in concept_texts(concept):
                if text.casefold() in ("homozygous", "heterozygous", "hemizygous"):
                    return text.casefold()
        return None

    # --- haplotype pairs -----------------------------------------------------------------------------

    def _pair(self, haplotypes: list[_Haplotype], observations, index: Index, report_dates,
              out: GenomicReading) -> None:
        """Two haplotypes of one gene make a diplotype only when a report (or the genotype derived from
        them) holds exactly those two; a homozygous/hemizygous haplotype stands alone. Nothing else is
        paired. An HLA haplotype that cannot be paired still states that its allele is present."""
        partners, crowded = self._partners(haplotypes, observations, index)
        by_id = {id(h): h for h in haplotypes}
        done: set[int] = set()
        for h in haplotypes:
            if h.zygosity in _ALONE:
                diplotype = f"{h.allele}/{h.allele}" if h.zygosity == "homozygous" else h.allele
                out.results.append(self._fact([h], diplotype, report_dates, out))
                continue
            if id(h) in done:
                continue
            mine = partners[id(h)]
            other = by_id[next(iter(mine))] if len(mine) == 1 else None
            if other is not None and partners[id(other)] == {id(h)}:
                done.update((id(h), id(other)))
                out.results.append(self._fact([h, other], f"{h.allele}/{other.allele}", report_dates, out))
                continue
            self._unpaired(h, _why_unpaired(h, mine, crowded), report_dates, out)

    @staticmethod
    def _partners(haplotypes: list[_Haplotype], observations, index: Index,
                  ) -> tuple[dict[int, set[int]], dict[int, int]]:
        """Each haplotype's possible partners (by id), from every report and every genotype derived from
        haplotypes; and the haplotypes found in a group of more than two of their gene (with that count)."""
        partners: dict[int, set[int]] = {id(h): set() for h in haplotypes}
        crowded: dict[int, int] = {}
        for group in _haplotype_groups(haplotypes, observations, index):
            for h in group:
                if h.zygosity in _ALONE:
                    continue
                same = [o for o in group if o.gene == h.gene and o.zygosity not in _ALONE]
                if len(same) == 2:
                    partners[id(h)].add(id(next(o for o in same if o is not h)))
                elif len(same) > 2:
                    crowded[id(h)] = max(crowded.get(id(h), 0), len(same))
        return partners, crowded

    def _unpaired(self, h: _Haplotype, reason: str, report_dates, out: GenomicReading) -> None:
        if h.gene in self.m.allele_status_genes:
            out.results.append(GenomicResult(gene=h.gene, allele=h.allele, allele_present=True, source_id=h.obs.rid,
                                             status=_status(h.obs.res), text=h.text,
                                             effective=self._effective(h.obs, report_dates, out)))
        else:
            self._skip(out, f"{h.obs.rid} ({h.gene} haplotype): not paired into a diplotype: {reason}", h.obs)

    def _fact(self, halves: list[_Haplotype], diplotype: str, report_dates, out) -> GenomicResult:
        statuses = [_status(h.obs.res) for h in halves]
        status = min(statuses, key=lambda s: _STATUS_RANK.get(s, -1) if s else -1)
        dates = [d for d in (self._effective(h.obs, report_dates, out) for h in halves) if d]
        return GenomicResult(gene=halves[0].gene, diplotype=diplotype, status=status,
                             effective=max(dates) if dates else None,
                             source_id="+".join(h.obs.rid for h in halves),
                             text=" + ".join(h.text for h in halves),
                             performer=next((p for p in (performer_of(h.obs.res) for h in halves) if p), None))

    # --- reporting ------------------------------------------------------------------------------------

    def _skip(self, out: GenomicReading, reason: str, obs: _Obs | None) -> None:
        if obs is not None:
            invalid = r4b_problem(obs.res)
            if invalid:
                reason += f" (also not valid FHIR R4: {invalid})"
        if reason in out.skipped:
            return      # the same resource reached twice (a search match and a report's included result)
        if obs is not None:
            gene = obs.gene or (obs.lab.gene if obs.lab and obs.lab.gene else None)
            allele = obs.lab.allele if obs.lab and obs.lab.allele else \
                (self._code_allele(obs, gene) if gene in self.m.allele_status_genes else None)
            # a result of a kind the reader does not read (a variant call) never supersedes a readable one
            when = None if obs.kind == "unrecognised" else _date_of(obs)
            out.unreadable.append(Unreadable(gene, obs.rid, reason, _status(obs.res), when, allele,
                                             drugs=self._assessed(obs.res) if gene is None else ()))
        out.skipped.append(reason)
        log.warning("skipped genomic resource: %s", reason)

    def _note(self, out: GenomicReading, reason: str) -> None:
        """A part of a result that is not used, said in the audit (no card: nothing was left unread)."""
        if reason not in out.skipped:
            out.skipped.append(reason)

    def _assessed(self, res: dict) -> tuple[str, ...]:
        """The medications a therapeutic implication assesses (LOINC 51963-7 "Medication assessed"): RxNorm
        codes and names, so a result whose gene could not be told is still said for those drugs."""
        out: list[str] = []
        for c in as_list(res.get("component")):
            if isinstance(c, dict) and any(k in self.m.medication_components for k in concept_keys(c.get("code"))):
                for _system, code, display in codings(c.get("valueCodeableConcept")):
                    out += [x for x in (code, display) if x]
        return tuple(dict.fromkeys(out))

    def _warn(self, out: GenomicReading, message: str) -> None:
        out.warnings.append(message)
        log.warning("%s", message)


def performer_of(res: dict) -> str | None:
    """The performing laboratory's name, for the card's evidence line: Observation.performer's display,
    or the name of a contained Organization it points to. Not a reference id (that names no one)."""
    contained = {c.get("id"): c for c in as_list(res.get("contained")) if isinstance(c, dict)}
    for ref in as_list(res.get("performer")):
        if not isinstance(ref, dict):
            continue
        if isinstance(ref.get("display"), str) and ref["display"].strip():
            return ref["display"].strip()
        target = ref.get("reference")
        if isinstance(target, str) and target.startswith("#"):
            name = contained.get(target[1:], {}).get("name")
            if isinstance(name, str) and name.strip():
                return name.strip()
    return None


def _date_of(obs: _Obs) -> datetime | None:
    """An Observation's date, else its report's (as `_effective` dates a readable one), without warnings:
    a bad date is already said when the result is read."""
    when, _ = effective_of(obs.res)
    for dr in obs.entry.reports if when is None else ():
        when, _ = effective_of(dr.resource)
        if when is not None:
            break
    return when


_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _stated_indeterminate(res: dict) -> str | None:
    """Why an Observation's source calls it Indeterminate (interpretation v3 IND; its notes), or None."""
    if not any((system, code) == (_INTERPRETATION, "IND")
               for concept in as_list(res.get("interpretation")) for system, code, _ in codings(concept)):
        return None
    notes = [text_of(n.get("text")) for n in as_list(res.get("note")) if isinstance(n, dict)]
    return "; ".join(n for n in notes if n) or "its source interprets it as Indeterminate"


_ALONE = ("homozygous", "hemizygous")      # a haplotype that is its own diplotype


def _haplotype_groups(haplotypes: list[_Haplotype], observations, index: Index) -> list[list[_Haplotype]]:
    """The haplotypes each report holds, and those each genotype is derived from."""
    by_entry = {id(h.obs.entry): h for h in haplotypes}
    by_report: dict[int, list[_Haplotype]] = {}
    for h in haplotypes:
        for dr in h.obs.entry.reports:
            by_report.setdefault(id(dr), []).append(h)
    groups: list[list[_Haplotype]] = list(by_report.values())
    for obs in observations.values():
        if obs.kind == "genotype":
            parents = [index.resolve(r, obs.entry) for r in as_list(obs.res.get("derivedFrom"))]
            groups.append([by_entry[id(p)] for p in parents if p is not None and id(p) in by_entry])
    return groups


def _why_unpaired(h: _Haplotype, mine: set[int], crowded: dict[int, int]) -> str:
    if len(mine) == 1:
        return "its partner is paired differently elsewhere"
    if len(mine) > 1:
        return "it pairs with different haplotypes in different reports"
    if id(h) in crowded:
        return f"its report has {crowded[id(h)]} {h.gene} haplotypes"
    return f"no report or genotype holds exactly two {h.gene} haplotypes with it"


def _status(res: dict) -> str | None:
    return res.get("status") if isinstance(res.get("status"), str) else None
