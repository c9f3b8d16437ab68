"""Phase two of a screening run: one partition's patients through the decision core.

Each patient becomes one `PatientCase` per active drug (hook order-sign, the drug's order as the
draft), decided by `cds.decision.decide` exactly as the service decides a hook call with the same
data: the patient's Observations and DiagnosticReports as the genomics prefetch, the Patient, the
active Consents. A patient on no drug of the knowledge base is decided once with no drafts, for
their results (carriers) and their consent. Cards become rows:

    recommendation card → actionable.csv      pre-test card → testing.csv
    a card about the check itself (conflicting results) → unreadable.csv (kind "card")

and what could not be read (a genomic result the reader skipped, a product nobody identifies) goes
to unreadable.csv with the reason. An active drug that got no card goes to no_card.csv with the core's
reason (use as usual under the policy, no result and no pre-test rule, no rule on this hook), so every
patient × active drug is accounted for. A patient whose Consent withholds genomic use gets no rows but a
line in withheld.csv. Per-patient logic sees the patient's resources sorted by their bytes, so the
order of lines in the export never changes an answer.
"""
from __future__ import annotations

import csv
import hashlib
import io
import pickle
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from cds.consent import DENIED, NOT_PERMITTED, UNREADABLE
from cds.decision import PatientCase, decide
from cds.populations import GENERAL
from cds.screen import ndjson, storage
from cds.screen.fhir_out import PartitionFhir
from cds.screen.outputs import COLUMNS
from cds.store.pseudonym import normalised_patient_id
from cds.store.records import patient_scrubber

ACTIVE_STATUSES = {"MedicationRequest": {"active"}, "MedicationStatement": {"active"}}
WITHHELD = (DENIED, NOT_PERMITTED, UNREADABLE)
MAX_SPLIT_DEPTH = 3              # a part still too large after this many splits is read as it is


@dataclass
class Settings:
    """What every worker needs, all of it picklable: the knowledge (not the engine: durable-rules
    handles are process-local), the pseudonym key and the run's switches. `kb_blob` (the pickled
    knowledge, ~3.5 MB) only where workers build their own Screener (dask); embedded workers are
    forked with the parent's Screener, and each task then carries a few bytes."""

    kb_blob: bytes | None
    kb_version: str
    audit_key: bytes
    raw_ids: bool = False
    require_consent: bool = False
    max_patient_bytes: int = ndjson.MAX_PATIENT_BYTES
    fhir_out: bool = False            # also write each patient's interpretation as FHIR (cds.screen.fhir_out)


@dataclass
class PartitionResult:
    partition: int
    records: int = 0                                     # lines read back from phase one's files
    medication_lines: int = 0
    medications_over_limit: int = 0                      # bytes of Medication resources, when none was kept
    row_files: list[tuple[str, int]] = field(default_factory=list)   # (rows file, rows), in output order
    patients: int = 0
    counts: Counter = field(default_factory=Counter)     # rows per file, patients per category
    gene_phenotype: Counter = field(default_factory=Counter)
    drugs: Counter = field(default_factory=Counter)      # actionable rows per drug
    pairs: Counter = field(default_factory=Counter)      # actionable rows per drug|gene
    seconds: float = 0.0


class Screener:
    """Built once per worker process: the compiled engine, the advisor, the pseudonym function."""

    def __init__(self, settings: Settings, kb: Any = None):
        from cds.engine import Engine
        from cds.pipeline import Advisor
        from cds.store.pseudonym import PatientHasher

        if kb is None:
            if settings.kb_blob is None:
                raise RuntimeError("a worker without the parent's Screener needs the pickled knowledge "
                                   "(Settings.kb_blob)")
            kb = pickle.loads(settings.kb_blob)
        self.settings = settings
        engine = Engine.from_knowledge(kb)
        self.advisor = Advisor.build(engine)
        self.kb = kb
        self.hasher = PatientHasher(settings.audit_key)
        self.fhir: PartitionFhir | None = None     # the part's FHIR resources, with --fhir-out
        self.recommendations = {r.id: r for g in kb.guidelines.values() for r in g.recommendations}
        self.dosing = {a.id for a in kb.dosing.values()}      # dose cards (warfarin) rest on a dosing file
        self.sources = {r.id: g.source for g in kb.guidelines.values() for r in g.recommendations}
        self.drugs_by_gene: dict[str, list[str]] = {}
        for plan in self.advisor.engine.compiled.drugs.values():
            for gene in set(plan.attributes.values()):
                self.drugs_by_gene.setdefault(gene, []).append(plan.drug)
        self._products: dict[bytes, tuple[list[str], list[str]]] = {}
        # (gene, lookup value) → the gene table's result, for the results CPIC flags as priority only
        self.priority_results = {(gene, r.result): r for gene, t in kb.genes.items() for r in t.results
                                 if r.is_priority}

    def classification(self, recommendation_ids: list[str]) -> str:
        """Each recommendation's grade, named by its source, in the order of `recommendation_ids` (a
        card resting on CPIC and DPWG has both): "CPIC: Strong + DPWG: not graded".
        One row per card, not per source, so a row stays one card the service shows; the source
        prefix on every cell lets a pharmacist sort or filter the column without knowing which
        guideline each id belongs to. DPWG's export grades nothing in CPIC's terms ("N/A"); a
        population other than general is named by CPIC's code, as the card's statements are."""
        parts = []
        for rid in recommendation_ids:
            rec, source = self.recommendations.get(rid), self.sources.get(rid, "")
            if rec is None:
                parts.append(f"{rid}: not in this knowledge base")
                continue
            grade = rec.classification or ("not graded" if source == "DPWG" else "no classification")
            population = f" ({rec.population})" if rec.population != GENERAL else ""
            parts.append(f"{source}{population}: {grade}")
        return " + ".join(parts)

    def _drugs_of(self, bundle: dict) -> tuple[list[str], list[str]]:
        """The knowledge-base drugs of one draft order, and what could not be identified. Remembered
        per product (what was ordered, not who or when): a cohort orders a formulary's worth of them."""
        order = bundle["entry"][0]["resource"]
        key = orjson.dumps([order.get(k) for k in ("medicationCodeableConcept", "medicationReference", "contained")]
                           + [e["resource"] for e in bundle["entry"][1:]], option=orjson.OPT_SORT_KEYS)
        found = self._products.get(key)
        if found is None:
            drugs, _, unresolved = self.advisor.drugs_of(self.advisor.resolver.read_orders(bundle))
            found = (drugs, unresolved)
            if not unresolved:          # what is unresolved may be named by the order's own id
                self._products[key] = found
        return found

    # --- one partition -----------------------------------------------------------------------------
    def screen_partition(self, work: str, partition: int) -> PartitionResult:
        """Decides every patient of one partition. A partition larger than twice the per-patient limit
        (a cohort far larger than its files suggested: a gzip bomb of valid lines) is first split
        into parts that size, so a worker holds one part's lines and one patient's resources at a time."""
        import time

        started = time.perf_counter()
        cap = self.settings.max_patient_bytes
        meds = ndjson.medications(work, cap)
        result = PartitionResult(partition, medication_lines=meds.lines, medications_over_limit=meds.over_limit)
        files = ndjson.partition_files(work, partition)
        self._screen_part(work, partition, "", files, meds.by_id, result, 0)
        result.seconds = time.perf_counter() - started
        return result

    def _screen_part(self, work: str, partition: int, tag: str, files: list[tuple[str, int]],
                     medications: dict[str, dict], result: PartitionResult, depth: int,
                     one_patient: bool = False) -> None:
        cap = self.settings.max_patient_bytes
        total = sum(size for _, size in files)
        if total > 2 * cap and depth < MAX_SPLIT_DEPTH and not one_patient:
            key = hashlib.blake2b(self.settings.audit_key, digest_size=32, person=f"split{depth}".encode()).digest()
            parts, count = ndjson.split([loc for loc, _ in files], storage.join(work, "split", f"{partition:05d}{tag}"),
                                        -(-total // cap), key)
            if depth == 0:
                result.records += count
            for i, part in enumerate(parts):
                self._screen_part(work, partition, f"{tag}.{i:03d}", [(part.location, part.size)], medications, result,
                                  depth + 1, part.one_patient)
            return
        groups, over = group_by_patient(ndjson.records([loc for loc, _ in files]), cap if total > cap else None)
        if depth == 0:
            result.records += sum(len(g) for g in groups.values()) + sum(n for _, n in over.values())
        rows: dict[str, list[list[Any]]] = {kind: [] for kind in COLUMNS}
        self.fhir = PartitionFhir(self.kb, self.settings.raw_ids) if self.settings.fhir_out else None
        labelled = []
        for key in [*groups, *over]:
            pid = ndjson.patient_id(key)
            labelled.append((pid if self.settings.raw_ids else self.hasher(pid), pid, key))
        labelled.sort()
        for label, pid, key in labelled:
            if key in over:
                size, lines = over[key]
                rows["unreadable"].append([label, "input", "", "", "", f"the patient's resources are {size:,} bytes "
                                           f"({lines:,} lines), over the limit of {cap:,} (--max-patient-bytes); "
                                           "patient not screened"])
                result.counts["patients_over_limit"] += 1
                continue
            patient_lines = groups.pop(key)
            patient_lines.sort()
            self.screen_patient(pid, label, [orjson.loads(line) for line in patient_lines], medications, rows, result)
        if self.fhir is not None:
            result.row_files += self.fhir.write(work, f"{partition:05d}{tag}")
        storage.makedirs(storage.join(work, "rows"))
        for kind, items in rows.items():
            name = f"{kind}-{partition:05d}{tag}.csv"
            text = io.StringIO(newline="")
            csv.writer(text).writerows(items)
            storage.write_text(storage.join(work, "rows", name), text.getvalue())
            result.row_files.append((name, len(items)))

    # --- one patient -------------------------------------------------------------------------------
    def screen_patient(self, pid: str, label: str, resources: list[dict], medications: dict[str, dict],
                       rows: dict[str, list[list[Any]]], result: PartitionResult) -> None:
        marks = {kind: len(items) for kind, items in rows.items()}
        try:
            self._screen_patient(pid, label, resources, medications, rows, result)
        finally:
            if not self.settings.raw_ids:
                # Resource ids and messages may contain the raw id (servers build ids from it): the
                # audit's rule applies, the raw id never leaves. The scrubber changes only text holding
                # the (normalised) id, so a row without it is left as it is.
                needle = normalised_patient_id(pid)
                scrub = None
                for kind, start in marks.items():
                    for row in rows[kind][start:]:
                        if needle and any(isinstance(v, str) and needle in v for v in row[1:]):
                            scrub = scrub or patient_scrubber(pid)
                            row[1:] = [scrub(v) if isinstance(v, str) else v for v in row[1:]]

    def _screen_patient(self, pid: str, label: str, resources: list[dict], medications: dict[str, dict],
                        rows: dict[str, list[list[Any]]], result: PartitionResult) -> None:
        patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
        genomics = [r for r in resources if r.get("resourceType") in ("Observation", "DiagnosticReport")]
        consent = [r for r in resources if r.get("resourceType") == "Consent"]
        active = [r for r in resources if r.get("status") in ACTIVE_STATUSES.get(r.get("resourceType", ""), ())]
        result.patients += 1
        ref = f"Patient/{pid}"

        # Which drug each active order is for; the first order of a drug stands for it.
        picked: dict[str, tuple[dict, str]] = {}            # drug → (draftOrders bundle, medication text)
        for resource in active:
            bundle = draft_orders(resource, medications)
            drugs, unresolved = self._drugs_of(bundle)
            for display in unresolved:
                rows["unreadable"].append([label, "medication", "", "", _where(resource),
                                           f"the ordered product could not be identified: {display}"])
            for drug in drugs:
                picked.setdefault(drug, (bundle, medication_text(resource)))
        cases: list[tuple[set[str], dict | None, str]] = []
        for drug, (bundle, text) in picked.items():
            same = next((c for c in cases if c[1] is bundle), None)
            if same:
                same[0].add(drug)
            else:
                cases.append(({drug}, bundle, text))
        if not cases:
            cases.append((set(), None, ""))                 # no drug: the results and consent still count

        facts = None
        actionable_genes: set[str] = set()
        evaluated = []
        for case_drugs, case_bundle, text in cases:
            # The results are read once and handed to every case of the patient (they are the same
            # genomics each time); consent is still decided by decide(), per case, as the service does.
            case = PatientCase(hook="order-sign", patient_ref=ref, patient=patient, genomics=genomics,
                               medications=[case_bundle
                                            or {"resourceType": "Bundle", "type": "collection", "entry": []}],
                               consent=consent, facts=facts,
                               # a dose (warfarin): height and weight among the Observations, the active orders
                               vitals=genomics, active_medications=[draft_orders(r, medications) for r in active])
            advice = decide(self.advisor, case, self.settings.require_consent)
            if advice.consent in WITHHELD:
                rows["withheld"].append([label, advice.consent])
                result.counts["patients_consent_withheld"] += 1
                return
            facts = advice.facts
            evaluated += [d for d in advice.evaluation.drugs if d.drug in case_drugs] if advice.evaluation else []
            for card in advice.cards:
                if card.drug not in case_drugs:
                    continue
                if card.pretest:
                    gene = card.facts[0]["gene"] if card.facts else ""
                    rows["testing"].append([label, card.drug, gene, card.rule_id, card.indicator, text,
                                            card.card["summary"]])
                elif card.recommendation_id:
                    genes = [f["gene"] for f in card.facts]
                    actionable_genes.update(genes)
                    rows["actionable"].append([
                        label, card.drug, ";".join(genes), ";".join(str(f["phenotype"]) for f in card.facts),
                        self.classification(card.audited_recommendation_ids)
                        if card.recommendation_id not in self.dosing else "CPIC: genotype-guided dose",
                        card.recommendation_id, card.rule_id, card.indicator,
                        card.guideline_id or "", text, card.card["summary"]])
                    result.drugs[card.drug] += 1
                    for gene in genes:
                        result.pairs[f"{card.drug}|{gene}"] += 1
                else:
                    rows["unreadable"].append([label, "card", card.drug, "", card.rule_id, card.card["summary"]])
            # An active drug without a card is not silence: the core says why (the service audits it).
            for reason in advice.decisions:
                drug, _, why = reason.partition(": no card — ")
                if drug in case_drugs:
                    rows["no_card"].append([label, drug, why or reason])
        assert facts is not None
        if self.fhir is not None:
            self.fhir.add_patient(label, facts.interpretations, evaluated, facts.conflicts, facts.results)
        if picked:
            result.counts["patients_on_screened_drugs"] += 1
        if actionable_genes:
            result.counts["patients_actionable"] += 1
        for reason in facts.unreadable:
            rows["unreadable"].append([label, "result", "", "", "", reason])
        for gene, ids in sorted(facts.conflicts.items()):
            rows["unreadable"].append([label, "conflict", "", gene, ",".join(ids),
                                       "current results disagree; no genotype-based advice for this gene"])
        if facts.interpretations:
            result.counts["patients_with_results"] += 1
        carrier = False
        for gene, interpretations in sorted(facts.interpretations.items()):
            first = interpretations[0]
            result.gene_phenotype[f"{gene}|{first.phenotype}"] += 1
            if gene in actionable_genes:
                continue                                    # on an affected drug: it is in actionable.csv
            for interp in interpretations:
                hit = next((self.priority_results[(gene, k)] for k in interp.lookup.values()
                            if (gene, k) in self.priority_results), None)
                if hit:
                    carrier = True
                    rows["carriers"].append([label, gene, interp.phenotype, hit.result, interp.diplotype or "",
                                             hit.priority, ";".join(sorted(self.drugs_by_gene.get(gene, [])))])
                    break
        if carrier:
            result.counts["patients_carriers"] += 1


def draft_orders(resource: dict, medications: dict[str, dict]) -> dict:
    """The order as the EHR would send it at signing: a MedicationRequest in a draftOrders Bundle,
    with the Medication it references. A MedicationStatement is stated as the request it records."""
    order = resource
    if resource.get("resourceType") == "MedicationStatement":
        order = {"resourceType": "MedicationRequest", "id": resource.get("id"), "status": "active",
                 "intent": "order", "subject": resource.get("subject")}
        for key in ("medicationCodeableConcept", "medicationReference", "contained"):
            if key in resource:
                order[key] = resource[key]
    entries = [{"resource": order}]
    reference = order.get("medicationReference")
    ref = reference.get("reference") if isinstance(reference, dict) else None
    if isinstance(ref, str) and ref.startswith("Medication/") and ref[11:] in medications:
        entries.append({"resource": medications[ref[11:]]})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def medication_text(resource: dict) -> str:
    concept = resource.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                return f"{coding.get('code')} {coding.get('display') or ''}".strip()
        if isinstance(concept.get("text"), str):
            return concept["text"]
    ref = resource.get("medicationReference")
    return ref.get("reference", "") if isinstance(ref, dict) else ""


def _where(resource: dict) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


# --- the worker's process-local state ---------------------------------------------------------------
_screener: Screener | None = None


def worker_screener(settings: Settings, kb: Any = None) -> Screener:
    """This process's Screener, built on first use (compiling the rules) and kept; from `kb` when the
    knowledge is at hand (the embedded parent), else from `settings.kb_blob`."""
    global _screener
    if _screener is None or _screener.settings.kb_version != settings.kb_version \
            or _screener.settings.audit_key != settings.audit_key or _screener.settings.raw_ids != settings.raw_ids \
            or _screener.settings.require_consent != settings.require_consent \
            or _screener.settings.max_patient_bytes != settings.max_patient_bytes \
            or _screener.settings.fhir_out != settings.fhir_out:
        _screener = Screener(settings, kb)
    return _screener


def group_by_patient(records: Iterator[tuple[bytes, bytes]], cap: int | None
                     ) -> tuple[dict[bytes, list[bytes]], dict[bytes, tuple[int, int]]]:
    """The lines of each patient key; with a `cap`, a patient whose lines add up to more than it is
    dropped as soon as they do (then only counted), so no more than `cap` of one patient is held.
    Returns the groups and, for each patient over the cap, (bytes, lines)."""
    groups: dict[bytes, list[bytes]] = {}
    if cap is None:
        for key, line in records:
            group = groups.get(key)
            if group is None:
                groups[key] = [line]
            else:
                group.append(line)
        return groups, {}
    sizes: dict[bytes, int] = {}
    over: dict[bytes, tuple[int, int]] = {}
    for key, line in records:
        size = sizes.get(key, 0) + len(line)
        sizes[key] = size
        if key in over:
            over[key] = (size, over[key][1] + 1)
        elif size > cap:
            over[key] = (size, len(groups.pop(key, [])) + 1)
        else:
            groups.setdefault(key, []).append(line)
    return groups, over


def screen_partition_task(settings: Settings, work: str, partition: int) -> PartitionResult:
    return worker_screener(settings).screen_partition(work, partition)
