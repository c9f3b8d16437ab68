"""Which genomic results count: status, newest per gene, and conflicts.

The rule, in order:
1. Status: only results whose status is in `allowed_statuses` (default final, amended, corrected)
   count; the others are ignored with their status as the reason.
2. The same result read twice (e.g. from a Bundle and from a prefetch) counts once.
3. Newest per gene: results are grouped by gene — and, for allele-status genes, by allele, since an
   HLA-B*57:01 test does not replace an HLA-B*15:02 test. Within a group, the results dated on the
   newest calendar day (as written, in its own time zone) are current; results from earlier days are
   ignored as superseded. Day precision keeps a report's genotype and its phenotype, dated "2020-01-01"
   and "2020-01-01T00:00:00-05:00", together. An undated result is never superseded and never
   supersedes: it stays current and is compared with the others.
4. Agreement: within a gene's current results, diplotypes must be equal (allele order aside),
   phenotypes equal, activity scores equal, and each allele's presence equal. Otherwise the gene is a
   conflict: it gets no usable result, and `conflicts[gene]` lists the disagreeing source ids.
   A diplotype beside a phenotype is not compared here: that needs the gene tables (the interpreter).
5. A result that could not be read (`unreadable`, counted by the same status rule) still has a gene and
   a date: dated on a later day than a group's newest results, it supersedes them, since the newest
   result on file is the one that counts and we cannot tell what it says. They are ignored with that
   reason and listed in `superseded_by_unreadable`, so the card that says a result could not be
   interpreted also names the older ones not used in its place. An unreadable result naming an HLA
   allele supersedes only that allele's group; one naming none, every group of its gene. One dated the
   same day as readable results, or undated, supersedes nothing (the readable ones are used and it is
   reported as skipped), as rule 3 treats results of one day or without a date.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from cds.facts import GenomicResult
from cds.fhir import values

DEFAULT_STATUSES = ("final", "amended", "corrected")


@dataclass
class CurrentResults:
    """`by_gene`: the usable current results per gene (newest first; several when they agree, or one
    per HLA allele). `conflicts`: gene → source ids of current results that disagree. `ignored`: why
    each non-counting result was ignored."""

    by_gene: dict[str, list[GenomicResult]] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    # gene → "Observation/x (date)" of readable results superseded by a newer one that could not be read
    superseded_by_unreadable: dict[str, list[str]] = field(default_factory=dict)


def select_current(results: list[GenomicResult], allowed_statuses=DEFAULT_STATUSES,
                   unreadable: Iterable[Any] = ()) -> CurrentResults:
    """`unreadable`: cds.fhir.genomics.Unreadable items (gene, source_id, status, effective, allele)."""
    out = CurrentResults()
    allowed = set(allowed_statuses)
    newer_unread = [u for u in unreadable if u.gene and u.effective is not None and u.status in allowed]
    groups: dict[tuple[str, str | None], list[GenomicResult]] = {}
    seen: set[GenomicResult] = set()
    for r in results:
        if r.status not in allowed:
            out.ignored.append(f"{_name(r)}: status {r.status or '(none)'} does not count")
            continue
        if r in seen:
            continue
        seen.add(r)
        groups.setdefault((r.gene, r.allele), []).append(r)

    current: dict[str, list[GenomicResult]] = {}
    for (gene, allele), group in groups.items():
        dated = [r for r in group if r.effective is not None]
        newest_day = max((_day(r) for r in dated), default=None)
        unread = max((u for u in newer_unread if u.gene == gene and u.allele in (None, allele)),
                     key=lambda u: u.effective.date(), default=None)
        if newest_day is not None and unread is not None and unread.effective.date() > newest_day:
            when = unread.effective.date().isoformat()
            older = out.superseded_by_unreadable.setdefault(gene, [])
            for r in dated:
                said = f"{_name(r)}: superseded by {unread.source_id} ({when}), a newer result that could not be read"
                if said not in out.ignored:       # a diplotype and its stated phenotype: one result
                    out.ignored.append(said)
                    older.append(f"{r.source_id or 'a result'} ({_day(r).isoformat()}): older, not used in its place")
            undated = [r for r in group if r.effective is None]
            if undated:
                current.setdefault(gene, []).extend(undated)
            continue
        newest = [r for r in dated if _day(r) == newest_day]
        for r in dated:
            if _day(r) != newest_day:
                out.ignored.append(f"{_name(r)}: superseded by {newest[0].source_id or 'a newer result'} "
                                   f"({_day(newest[0]).isoformat()})")
        current.setdefault(gene, []).extend(newest + [r for r in group if r.effective is None])

    for gene, rs in current.items():
        disagreeing = _disagreements(rs)
        if disagreeing:
            out.conflicts[gene] = sorted({r.source_id or "(no id)" for r in disagreeing})
        else:
            out.by_gene[gene] = sorted(rs, key=lambda r: (r.effective is not None, r.effective), reverse=True)
    return out


def _day(r: GenomicResult) -> date:
    assert r.effective is not None     # only dated results are compared by day
    return r.effective.date()      # the date as written: aware datetimes keep their own offset


def _name(r: GenomicResult) -> str:
    return f"{r.source_id or 'a result'} ({r.gene})"


def _disagreements(rs: list[GenomicResult]) -> list[GenomicResult]:
    """The results in `rs` that disagree with another of the same kind (empty when all agree)."""
    out: list[GenomicResult] = []
    diplotypes = [(r, d) for r in rs if (d := r.diplotype) is not None]
    if any(not values.same_diplotype(diplotypes[0][1], d) for _, d in diplotypes[1:]):
        out += [r for r, _ in diplotypes]
    phenotypes = [(r, p) for r in rs if (p := r.phenotype) is not None]
    if len({p.casefold() for _, p in phenotypes}) > 1:
        out += [r for r, _ in phenotypes]
    scores = [(r, s) for r in rs if (s := r.activity_score) is not None]
    if len({_score(s) for _, s in scores}) > 1:
        out += [r for r, _ in scores]
    by_allele: dict[str, list[GenomicResult]] = {}
    for r in rs:
        if r.allele is not None:
            by_allele.setdefault(r.allele, []).append(r)
    for same in by_allele.values():
        if len({r.allele_present for r in same}) > 1:
            out += same
    return out


def _score(text: str) -> object:
    """'1', '1.0' and '1.00' are one score; '≥3.0' differs from '3.0'."""
    try:
        return Decimal(text.strip().lstrip("≥")), text.strip().startswith("≥")
    except InvalidOperation:
        return text
