"""What the SMART summary page hands on: the interpretation as FHIR (HL7 Genomics Reporting, a Bundle to
download) and the patient's own summary (a printable page and a PDF with a wallet card), made from the
page's own results through the decision core.

The page carries its results in a signed form field (the launch signer, an hour's validity), so these
POST routes compute only from results a launch produced — never from a URL (patient data stays out of
links, logs and history) and never from results a stranger posts.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from cds.facts import GenomicResult
from cds.patient_summary.model import PatientSummary, ReportedResult, build_patient_summary

DOWNLOAD_SECONDS = 3600


def evidence(summary) -> dict[str, GenomicResult]:
    """The page's results by source id, with their date and laboratory (for the FHIR resources)."""
    out = {}
    for row in summary.results:
        when = _date(row.date)
        for source in row.sources:
            out[source] = GenomicResult(gene=row.gene, source_id=source, effective=when, performer=row.lab)
    return out


def patient_summary(kb, renderer, summary) -> PatientSummary:
    rows = [ReportedResult(r.gene, r.reported, r.phenotype, r.activity_score, r.date, r.lab, r.problem)
            for r in summary.results]
    return build_patient_summary(kb, renderer, summary.evaluation, rows)


def _date(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
