"""The patient's own summary, as plain data: each result on file, what the guidelines call it, the drugs
of the knowledge base whose advice it changes, and the guidelines' advice in their own words.

Modelled on the card the PREPARE study gave every patient to show any prescriber (the "Safety-Code"
card; Swen et al., Lancet 2023): the results, who tested them and when, and a QR code whose content is
the same results as text (no link: nothing to look up, no server needed). The clinical statements are
CPIC's and DPWG's own — phenotype terms, EHR priority, recommendation text, classification — and only
the framing sentences are ours (cds/patient_summary/words.py). Which drugs a result "changes" is what
the cards decide: the card policy's statements (`CardRenderer.statements`), never a reading of card text.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cds.engine import Evaluation
from cds.genotype import attribute_gene
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT
from cds.patient_summary import words


@dataclass(frozen=True)
class ReportedResult:
    """One result on file, as reported and as interpreted (the SMART page's rows, explain's results)."""

    gene: str
    reported: str                            # the diplotype, score or status as the laboratory stated it
    phenotype: str | None = None             # CPIC's term for it (an HLA gene: the allele statuses)
    activity_score: str | None = None
    date: str | None = None                  # ISO date of the result
    lab: str | None = None                   # the laboratory
    problem: str | None = None               # why it could not be interpreted (Indeterminate, no table)
    no_result: bool = False                  # the laboratory had no result for this gene


@dataclass(frozen=True)
class ResultLine:
    result: ReportedResult
    priority: str | None                     # CPIC's EHR priority for this result, its own words
    drugs: tuple[str, ...]                   # drugs whose guideline advice this result changes

    @property
    def gene(self) -> str:
        return self.result.gene


@dataclass(frozen=True)
class DrugAdvice:
    drug: str
    source: str                              # CPIC, DPWG
    classification: str
    recommendation: str                      # the source's own words
    label: str                               # which statement it is, when a drug has several ("" otherwise)
    guideline: str
    url: str


@dataclass
class PatientSummary:
    lines: list[ResultLine]
    advice: list[DrugAdvice] = field(default_factory=list)
    knowledge_version: str = ""

    @property
    def tested(self) -> list[tuple[str | None, str | None]]:
        """(date, laboratory) of the results, each pair once, in order."""
        seen: list[tuple[str | None, str | None]] = []
        for line in self.lines:
            pair = (line.result.date, line.result.lab)
            if pair not in seen and not line.result.no_result:
                seen.append(pair)
        return seen

    @property
    def qr_text(self) -> str:
        """The QR code's content: the results as text, the same lines the card shows."""
        out = [words.QR_TITLE]
        out += [words.result_line(line.result) for line in self.lines]
        out += [words.tested_line(date, lab) for date, lab in self.tested]
        out.append(words.SHOW_PRESCRIBER)
        return "\n".join(out)


def build_patient_summary(kb: KnowledgeBase, renderer, evaluation: Evaluation,
                          results: Iterable[ReportedResult]) -> PatientSummary:
    """`evaluation`: the results' evaluation over every drug of the knowledge base; `renderer` decides,
    as for a card, which recommendations change prescribing (a statement with a policy)."""
    changed: dict[str, set[str]] = {}
    advice: list[DrugAdvice] = []
    for drug in evaluation.drugs:
        rule = drug.rules.get("order-sign") or drug.rules.get("order-select")
        if rule is None:
            continue
        for s in renderer.statements(rule, list(drug.matches)):
            if not s.policy:
                continue
            rec, g = s.recommendation, s.match.guideline
            for attribute, value in rec.lookup.items():
                if value != NO_RESULT:
                    changed.setdefault(attribute_gene(attribute), set()).add(drug.drug)
            advice.append(DrugAdvice(drug.drug, g.source, rec.classification or words.NOT_GRADED, rec.recommendation,
                                     s.label, g.name, g.url))
    lines = []
    for result in results:
        table = kb.genes.get(result.gene)
        keys = _keys(evaluation, result)
        text = next((r for r in (table.results if table else []) if r.result in keys), None)
        lines.append(ResultLine(result, text.priority if text else None,
                                tuple(sorted(changed.get(result.gene, ()))) if not result.no_result else ()))
    advice.sort(key=lambda a: (a.drug, a.source, a.label))
    return PatientSummary(lines, advice, kb.version)


def _keys(evaluation: Evaluation, result: ReportedResult) -> set[str]:
    return {v for i in evaluation.interpretations.get(result.gene, []) for v in i.lookup.values()}


def reported_from_evaluation(evaluation: Evaluation, *, date: str | None = None, lab: str | None = None,
                             no_result: Iterable[str] = (), not_interpreted: Iterable[tuple[str, str, str]] = ()
                             ) -> list[ReportedResult]:
    """Results typed or read from a PharmCAT file, as the summary lists them: each gene's most specific
    statement; `no_result`: genes the laboratory had no result for; `not_interpreted`: (gene, reported, why)."""
    out = []
    for gene, items in sorted(evaluation.interpretations.items()):
        first = items[0]
        reported = first.diplotype or (f"activity score {first.activity_score}" if first.stated_as == "activity score"
                                       else first.phenotype)
        out.append(ReportedResult(gene, reported, first.phenotype, first.activity_score, date, lab,
                                  first.reason if first.indeterminate else None))
    for gene, statements in sorted(evaluation.conflicts.items()):
        out.append(ReportedResult(gene, "; ".join(statements), None, None, date, lab, words.CONFLICT))
    out += [ReportedResult(g, reported, None, None, date, lab, why) for g, reported, why in not_interpreted]
    out += [ReportedResult(g, "", None, None, None, None, None, no_result=True) for g in sorted(no_result)]
    return out
