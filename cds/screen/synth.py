"""`cds synth`: a deterministic SYNTHETIC cohort in FHIR Bulk Data NDJSON, for tests and benchmarks.

NOT CLINICAL DATA. Every frequency below is made up to exercise the code (how often a patient has a
result, which shape it takes, how many drugs they take); none is a population allele frequency.
What *is* real is the vocabulary: alleles, HLA alleles of interest and phenotype terms are drawn from
the knowledge base's gene tables (CPIC), drugs from its guidelines, products from the RxNorm product
table (guidelines/rxnorm/products.tsv, from ../shared/rxnorm), so every resource is one the service
reads the way it would read a laboratory's.

Result shapes (docs/fhir-reading.md): IG genotype Observation (LOINC 84413-4 with the gene-studied
component), lab-style text genotype, phenotype-only text, a DiagnosticReport with contained genotype
results, HLA allele screens. Medications: MedicationRequest or MedicationStatement, coded by RxNorm
SCD, SBD or ingredient. Some noise on purpose: results that cannot be read, preliminary results,
contradicting results, products nobody can identify, stopped orders, Consents that deny genomic use.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from cds.knowledge.loader import KnowledgeBase

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
HGNC = "http://www.genenames.org"
RESOURCE_TYPES = ("Patient", "Observation", "DiagnosticReport", "MedicationRequest", "MedicationStatement", "Consent")

# SYNTHETIC frequencies (not clinical): chosen to give every output file something to hold.
P_TESTED = 0.7                 # a patient has pharmacogenomic results at all
GENES_PER_TESTED = (1, 4)      # how many genes a tested patient has results for
SHAPES = (("genotype", 0.45), ("lab-text", 0.2), ("phenotype", 0.15), ("report", 0.2))
P_REFERENCE_ALLELE = 0.55      # each allele is the gene's first listed allele (usually *1)
P_UNREADABLE = 0.02            # a result the reader must skip (no gene named)
P_PRELIMINARY = 0.02           # a result that is not final (ignored)
P_CONFLICT = 0.01              # a second, disagreeing current result for the same gene
P_CONSENT_DENY = 0.03          # an active Consent denying genomic data use
MEDS_PER_PATIENT = (0, 3)
P_MEDICATION_STATEMENT = 0.2
P_STOPPED = 0.1                # an order that is no longer active
P_UNKNOWN_PRODUCT = 0.02       # a product no table identifies
CODINGS = (("SCD", 0.4), ("SBD", 0.3), ("IN", 0.3))

# Drugs the cohort is prescribed: common pharmacogenomic drugs of the knowledge base, and the
# drugs with pre-test rules (rules/pretest.yaml), so every output has rows.
DRUGS = ("clopidogrel", "codeine", "tramadol", "simvastatin", "atorvastatin", "citalopram", "sertraline",
         "escitalopram", "ondansetron", "omeprazole", "pantoprazole", "amitriptyline", "tacrolimus",
         "fluorouracil", "capecitabine", "mercaptopurine", "azathioprine", "abacavir", "carbamazepine",
         "allopurinol", "phenytoin", "celecoxib", "voriconazole", "efavirenz", "atazanavir", "rasburicase",
         "warfarin", "metoprolol", "ibuprofen")
GENES = ("CYP2C19", "CYP2D6", "CYP2C9", "CYP3A5", "DPYD", "TPMT", "NUDT15", "SLCO1B1", "UGT1A1", "HLA-B", "HLA-A")


@dataclass
class _Vocabulary:
    alleles: dict[str, list[str]]                 # gene → alleles with a CPIC function
    phenotypes: dict[str, list[str]]              # gene → CPIC phenotype terms
    hla: dict[str, list[str]]                     # allele-status gene → alleles of interest
    hgnc: dict[str, str]
    products: dict[str, list[tuple[str, str, str]]]  # drug → (rxcui, tty, name)
    ingredients: dict[str, str]                   # drug → ingredient RxCUI


def _vocabulary(kb: KnowledgeBase) -> _Vocabulary:
    from cds.fhir.mappings import default_mappings
    from cds.fhir.medications import DEFAULT_PRODUCTS

    alleles, phenotypes, hla = {}, {}, {}
    for gene in GENES:
        table = kb.genes.get(gene)
        if table is None:
            continue
        if table.kind == "allele-status":
            hla[gene] = list(table.alleles_of_interest)
            continue
        alleles[gene] = [name for name, a in table.alleles.items() if a.function]
        phenotypes[gene] = sorted({r.phenotype for r in table.phenotype_rules if r.phenotype != "Indeterminate"}
                                  | {r.phenotype for r in table.score_ranges if r.phenotype != "Indeterminate"})
    mappings = default_mappings()
    hgnc = {g: f"HGNC:{n}" for n, g in mappings.gene_by_hgnc_number.items()}
    known = {d.name.lower(): d.rxnorm for gs in kb.drugs().values() for g in gs for d in g.drugs if d.rxnorm}
    drugs = [d for d in DRUGS if d in known]
    products: dict[str, list[tuple[str, str, str]]] = {d: [] for d in drugs}
    with open(DEFAULT_PRODUCTS, encoding="utf-8") as f:
        rows = csv.reader((line for line in f if not line.startswith("#")), delimiter="\t")
        next(rows)
        for rxcui, tty, name, _codes, names, _added in rows:
            ingredient_names = names.split(";")
            if len(ingredient_names) == 1 and ingredient_names[0] in products:
                products[ingredient_names[0]].append((rxcui, tty, name))
    return _Vocabulary(alleles, phenotypes, hla, hgnc, products, {d: known[d] for d in drugs})


def _choose(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    x, total = rng.random(), 0.0
    for value, weight in weighted:
        total += weight
        if x < total:
            return value
    return weighted[-1][0]


class CohortWriter:
    """Writes one NDJSON file per resource type; `patients` are generated one at a time."""

    def __init__(self, kb: KnowledgeBase, seed: int = 1):
        self.vocab = _vocabulary(kb)
        self.seed = seed

    def patient(self, n: int) -> Iterator[dict[str, Any]]:
        """The resources of patient number n (deterministic in seed and n alone)."""
        rng = random.Random(f"{self.seed}:{n}")
        pid = f"synth-{n:07d}"
        ref = {"reference": f"Patient/{pid}"}
        born = date(1935, 1, 1) + timedelta(days=rng.randrange(0, 80 * 365))
        yield {"resourceType": "Patient", "id": pid, "birthDate": born.isoformat(),
               "meta": {"tag": [{"system": "urn:pgx-cds:synthetic", "code": "synthetic",
                                 "display": "Synthetic test patient, not clinical data"}]}}
        if rng.random() < P_TESTED:
            genes = rng.sample([g for g in GENES if g in self.vocab.alleles or g in self.vocab.hla],
                               rng.randint(*GENES_PER_TESTED))
            tested_on = date(2015, 1, 1) + timedelta(days=rng.randrange(0, 3000))
            for i, gene in enumerate(genes):
                yield from self._result(rng, pid, ref, gene, i, tested_on)
            if rng.random() < P_UNREADABLE:
                yield {"resourceType": "Observation", "id": f"{pid}-panel", "status": "final", "subject": ref,
                       "effectiveDateTime": tested_on.isoformat(),
                       "code": {"text": "Pharmacogenomic panel"}, "valueString": "see scanned report"}
        for m in range(rng.randint(*MEDS_PER_PATIENT)):
            yield self._medication(rng, pid, ref, m)
        if rng.random() < P_CONSENT_DENY:
            yield {"resourceType": "Consent", "id": f"{pid}-consent", "status": "active", "patient": ref,
                   "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                         "code": "patient-privacy"}]},
                   "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                   "provision": {"type": "deny", "securityLabel": [
                       {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "GDIS"}]}}

    # --- results ------------------------------------------------------------------------------------
    def _diplotype(self, rng: random.Random, gene: str) -> str:
        names = self.vocab.alleles[gene]
        pick = [names[0] if rng.random() < P_REFERENCE_ALLELE else rng.choice(names) for _ in range(2)]
        return "/".join(pick)

    def _result(self, rng: random.Random, pid: str, ref: dict, gene: str, i: int, on: date) -> Iterator[dict]:
        status = "preliminary" if rng.random() < P_PRELIMINARY else "final"
        oid = f"{pid}-r{i}"
        if gene in self.vocab.hla:
            allele = rng.choice(self.vocab.hla[gene])
            positive = rng.random() < 0.1
            yield {"resourceType": "Observation", "id": oid, "status": status, "subject": ref,
                   "effectiveDateTime": on.isoformat(), "code": {"text": f"{gene}{allele} screen"},
                   "valueString": "Detected" if positive else "Not detected"}
            return
        shape = _choose(rng, SHAPES)
        if shape == "phenotype":
            yield self._phenotype_text(oid, status, ref, on, gene, rng.choice(self.vocab.phenotypes[gene]))
        elif shape == "lab-text":
            yield {"resourceType": "Observation", "id": oid, "status": status, "subject": ref,
                   "effectiveDateTime": on.isoformat(),
                   "code": {"coding": [{"system": "http://synthetic-lab.example/codes", "code": f"PGX-{gene}-GT",
                                        "display": f"{gene} genotype"}]},
                   "valueString": f"{gene} {self._diplotype(rng, gene)}"}
        elif shape == "genotype":
            yield self._genotype(oid, status, ref, on, gene, self._diplotype(rng, gene))
        else:
            contained = self._genotype("g1", status, None, None, gene, self._diplotype(rng, gene))
            yield {"resourceType": "DiagnosticReport", "id": f"{oid}-report", "status": status, "subject": ref,
                   "effectiveDateTime": on.isoformat(), "issued": f"{on.isoformat()}T12:00:00Z",
                   "code": {"coding": [{"system": LOINC, "code": "81247-9",
                                        "display": "Master HL7 genetic variant reporting panel"}]},
                   "contained": [contained], "result": [{"reference": "#g1"}]}
        if rng.random() < P_CONFLICT:
            other = [p for p in self.vocab.phenotypes[gene]]
            yield self._phenotype_text(f"{oid}-b", "final", ref, on, gene, rng.choice(other))

    def _genotype(self, oid: str, status: str, ref: dict | None, on: date | None, gene: str, diplotype: str) -> dict:
        obs = {"resourceType": "Observation", "id": oid, "status": status,
               "code": {"coding": [{"system": LOINC, "code": "84413-4", "display": "Genotype display name"}]},
               "valueCodeableConcept": {"text": "/".join(f"{gene}{a}" if a.startswith("*") else a
                                                         for a in diplotype.split("/"))},
               "component": [{"code": {"coding": [{"system": LOINC, "code": "48018-6",
                                                   "display": "Gene studied [ID]"}]},
                              "valueCodeableConcept": {"coding": [{"system": HGNC, "code": self.vocab.hgnc[gene],
                                                                   "display": gene}]}}]}
        if ref is not None:
            obs["subject"] = ref
        if on is not None:
            obs["effectiveDateTime"] = on.isoformat()
        return obs

    @staticmethod
    def _phenotype_text(oid: str, status: str, ref: dict, on: date, gene: str, phenotype: str) -> dict:
        return {"resourceType": "Observation", "id": oid, "status": status, "subject": ref,
                "effectiveDateTime": on.isoformat(),
                "code": {"coding": [{"system": "http://synthetic-lab.example/codes", "code": f"PGX-{gene}-PH",
                                     "display": f"{gene} phenotype"}]},
                "valueString": phenotype}

    # --- medications --------------------------------------------------------------------------------
    def _medication(self, rng: random.Random, pid: str, ref: dict, m: int) -> dict:
        drug = rng.choice(list(self.vocab.ingredients))
        if rng.random() < P_UNKNOWN_PRODUCT:
            concept = {"coding": [{"system": RXNORM, "code": "999999001", "display": "Investigational product"}],
                       "text": "Investigational product"}
        else:
            tty = _choose(rng, CODINGS)
            products = [p for p in self.vocab.products[drug] if p[1] == tty]
            if tty == "IN" or not products:
                concept = {"coding": [{"system": RXNORM, "code": self.vocab.ingredients[drug], "display": drug}],
                           "text": drug}
            else:
                rxcui, _, name = rng.choice(products)
                concept = {"coding": [{"system": RXNORM, "code": rxcui, "display": name}], "text": name}
        status = "stopped" if rng.random() < P_STOPPED else "active"
        if rng.random() < P_MEDICATION_STATEMENT:
            return {"resourceType": "MedicationStatement", "id": f"{pid}-ms{m}", "status": status,
                    "subject": ref, "medicationCodeableConcept": concept}
        return {"resourceType": "MedicationRequest", "id": f"{pid}-mr{m}", "intent": "order",
                "status": "completed" if status == "stopped" else "active", "subject": ref,
                "medicationCodeableConcept": concept, "authoredOn": "2026-01-15"}


def write_cohort(kb: KnowledgeBase, patients: int, out: Path, seed: int = 1, gzip: bool = False) -> dict[str, int]:
    """Write `patients` synthetic patients as Bulk Data NDJSON files in `out`; lines per file."""
    import gzip as gz

    out.mkdir(parents=True, exist_ok=True)
    writer = CohortWriter(kb, seed)
    suffix = ".ndjson.gz" if gzip else ".ndjson"
    counts = dict.fromkeys(RESOURCE_TYPES, 0)
    with contextlib.ExitStack() as stack:
        opener = functools.partial(gz.open, compresslevel=1) if gzip else open
        files = {t: stack.enter_context(opener(out / f"{t}{suffix}", "wb")) for t in RESOURCE_TYPES}
        for n in range(1, patients + 1):
            for resource in writer.patient(n):
                kind = resource["resourceType"]
                files[kind].write(orjson.dumps(resource) + b"\n")
                counts[kind] += 1
    (out / "SYNTHETIC-README.txt").write_text(
        f"Synthetic FHIR Bulk Data cohort made by `cds synth --patients {patients} --seed {seed}`.\n"
        "NOT CLINICAL DATA: the frequencies are made up to exercise pgx-cds (cds/screen/synth.py);\n"
        "alleles, phenotypes, drugs and products are real vocabulary from the knowledge base.\n", encoding="utf-8")
    return counts
