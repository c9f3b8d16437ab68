"""A screening run's interpretations as FHIR Bulk Data NDJSON (`cds screen --fhir-out DIR`): one file per
resource type (Observation.ndjson, Task.ndjson, DiagnosticReport.ndjson), as a Bulk Data export is laid
out, so an EHR can import them.

Each worker collects its partition's resources and writes them beside its rows; the run joins the
partitions in order, as it joins the CSV files. Patients are named as the run names them: the audit
pseudonym, the raw id only with `--raw-ids`; without raw ids no resource refers back to the source's
Observations either (their ids may carry the patient's, and they would lead back to the patient).
"""
from __future__ import annotations

import orjson

from cds.engine import DrugEvaluation, Evaluation
from cds.facts import GenomicResult
from cds.fhir.interpretation import interpretation_resources
from cds.genotype import Interpretation
from cds.knowledge.loader import KnowledgeBase
from cds.screen import storage

TYPES = ("Observation", "Task", "DiagnosticReport")
_FOLDER = "fhir"


class PartitionFhir:
    """The resources of one partition's patients, in patient order."""

    def __init__(self, kb: KnowledgeBase, raw_ids: bool, issued: str | None = None):
        self.kb = kb
        self.raw_ids = raw_ids
        self.issued = issued
        self.lines: dict[str, list[bytes]] = {t: [] for t in TYPES}

    def add_patient(self, label: str, interpretations: dict[str, list[Interpretation]],
                    drugs: list[DrugEvaluation], conflicts: dict[str, list[str]],
                    evidence: dict[str, GenomicResult]) -> None:
        evaluation = Evaluation(interpretations, drugs, conflicts=conflicts)
        made = interpretation_resources(self.kb, evaluation, evidence=evidence, patient_ref=f"Patient/{label}",
                                        scope=label, issued=self.issued, link_sources=self.raw_ids)
        for resource in made.resources:
            self.lines[resource["resourceType"]].append(orjson.dumps(resource) + b"\n")

    def write(self, work: str, part: str) -> list[tuple[str, int]]:
        """Write the part's files under WORK/fhir (a folder or an object-store prefix); returns each
        file's name and count, in the order the run joins them (beside its rows files)."""
        folder = storage.join(work, _FOLDER)
        storage.makedirs(folder)
        written = []
        for rtype, lines in self.lines.items():
            name = f"{_FOLDER}-{rtype}-{part}.ndjson"
            with storage.open_file(storage.join(folder, name), "wb") as f:
                f.writelines(lines)
            written.append((name, len(lines)))
        return written


def join_parts(work: str, decided: list, out: str) -> dict[str, int]:
    """Concatenate the parts' files, in the run's order, into OUT/<Type>.ndjson; the count per type."""
    storage.makedirs(out)
    counts = {}
    for rtype in TYPES:
        prefix, n = f"{_FOLDER}-{rtype}-", 0
        with storage.open_file(storage.join(out, f"{rtype}.ndjson"), "wb") as f:
            for result in decided:
                for name, lines in result.row_files:
                    if name.startswith(prefix):
                        with storage.open_file(storage.join(work, _FOLDER, name)) as src:
                            while block := src.read(1 << 20):
                                f.write(block)
                        n += lines
        counts[rtype] = n
    return counts
