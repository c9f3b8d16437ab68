"""Read PharmCAT's outputs as PharmCAT wrote them: `*.phenotype.json` (the phenotyper), `*.report.json`
(the reporter) and outside-call files (a lab's calls in PharmCAT's input format).

Formats: PharmCAT's documentation (docs/using/Outside-Call-Format.md; the JSON as its examples in
docs/examples/ show it, and docs/methods/Matching-Recommendations.md: the diplotype used to look up a
recommendation is `recommendationDiplotypes`, the one shown is `sourceDiplotypes`). PharmCAT 3.x keys
`geneReports` (phenotype.json) and `genes` (report.json) by gene; 2.x nested them by guideline source
(`{"CPIC": {gene: …}, "DPWG": {…}}`), read here with CPIC's report first.

Per gene (cds.pharmcat.model.GeneCall): the recommendation diplotypes with PharmCAT's phenotypes,
activity score and lookup keys, `callSource`, and a status: *no result* where PharmCAT has none
(`Unknown/Unknown`, lookup key "No Result"); *Indeterminate* where it could not decide between several
diplotypes or called a combination of alleles, with PharmCAT's own reason; else *called*. A file that
is not one of these formats is a CdsError naming the file and, for outside calls, the line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cds.errors import CdsError
from cds.pharmcat.model import (
    CALLED,
    INDETERMINATE,
    MATCHER,
    NO_RESULT,
    NONE,
    OUTSIDE,
    OUTSIDE_CALL_TSV,
    PHENOTYPE_JSON,
    REPORT_JSON,
    CalledDiplotype,
    GeneCall,
    PharmcatResults,
)

_NO_RESULT_KEY = "No Result"
_UNKNOWN_ALLELE = "Unknown"
_CALL_SOURCES = (MATCHER, OUTSIDE, NONE)
_SOURCE_ORDER = ("CPIC", "DPWG", "FDA")       # PharmCAT 2.x: gene reports per guideline source
MAX_BYTES = 50_000_000                        # the largest real report.json is a few MB


def read_pharmcat(path: str | Path) -> PharmcatResults:
    """Read a PharmCAT phenotype.json, report.json or outside-call file (told apart by content)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise CdsError(f"{path.name}: {path.stat().st_size:,} bytes is larger than any PharmCAT output "
                           f"({MAX_BYTES:,} at most)")
        raw = path.read_bytes()
    except OSError as err:
        raise CdsError(f"cannot read {path}: {err.strerror}") from None
    return parse_pharmcat(raw, path.name)


def parse_pharmcat(raw: bytes | str, name: str = "the file") -> PharmcatResults:
    """Read PharmCAT output from its text (an upload); `name` names it in error messages."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as err:
        raise CdsError(f"{name}: not UTF-8 text (byte {err.start}); PharmCAT reads and writes UTF-8") from None
    if text.lstrip().startswith("{"):
        return _read_json(text, name)
    return read_outside_calls(text, name)


# --- JSON ----------------------------------------------------------------------------------------

def _read_json(text: str, name: str) -> PharmcatResults:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise CdsError(f"{name}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    if not isinstance(doc, dict):
        raise CdsError(f"{name}: a PharmCAT JSON output is an object")
    if "geneReports" in doc:
        kind, reports = PHENOTYPE_JSON, doc["geneReports"]
    elif "genes" in doc and "pharmcatVersion" in doc:
        kind, reports = REPORT_JSON, doc["genes"]
    else:
        raise CdsError(f"{name}: not a PharmCAT phenotype.json (no 'geneReports') or report.json "
                       "(no 'genes' and 'pharmcatVersion')")
    calls = tuple(_gene_call(gene, report, name) for gene, report in _gene_reports(reports, name).items())
    found = doc.get("matcherMetadata")
    matcher: dict = found if isinstance(found, dict) else {}
    data_version = (_text(doc.get("dataVersion"))
                    or next((c.phenotype_version for c in calls if c.phenotype_version), None))
    return PharmcatResults(kind, calls, pharmcat_version=_text(doc.get("pharmcatVersion")), data_version=data_version,
                           matcher_version=_text(matcher.get("namedAlleleMatcherVersion")),
                           timestamp=_text(doc.get("timestamp")) or _text(matcher.get("timestamp")))


def _gene_reports(reports: Any, name: str) -> dict[str, dict]:
    """Gene → its report, from PharmCAT 3.x's flat map or 2.x's map per guideline source."""
    if isinstance(reports, list):   # some versions wrote a list of gene reports
        reports = {r.get("geneSymbol"): r for r in reports if isinstance(r, dict)}
    if not isinstance(reports, dict):
        raise CdsError(f"{name}: the gene reports are not an object keyed by gene")
    if reports and all(isinstance(v, dict) and "geneSymbol" not in v and all(isinstance(x, dict) for x in v.values())
                       for v in reports.values()):
        merged: dict[str, dict] = {}
        for source in sorted(reports, key=lambda s: (_SOURCE_ORDER.index(s) if s in _SOURCE_ORDER else 9, s)):
            for gene, report in reports[source].items():
                merged.setdefault(gene, report)
        reports = merged
    out = {}
    for gene, report in reports.items():
        if not isinstance(report, dict):
            raise CdsError(f"{name}: the report for gene {gene!r} is not an object")
        out[_text(report.get("geneSymbol")) or str(gene)] = report
    return out


def _gene_call(gene: str, report: dict, name: str) -> GeneCall:
    source = report.get("callSource") or NONE
    if source not in _CALL_SOURCES:
        raise CdsError(f"{name}: {gene}: callSource {source!r} is not one of {', '.join(_CALL_SOURCES)}")
    raw = report.get("recommendationDiplotypes") or []
    if not isinstance(raw, list):
        raise CdsError(f"{name}: {gene}: recommendationDiplotypes is not a list")
    diplotypes = tuple(_diplotype(d, f"{name}: {gene}: recommendationDiplotypes[{i}]") for i, d in enumerate(raw))
    messages = tuple(m for m in (_message(x) for x in report.get("messages") or []) if m)
    shown = " or ".join(_text(d.get("label")) or ""
                        for d in report.get("sourceDiplotypes") or [] if isinstance(d, dict))
    status, reason = _status(gene, source, diplotypes, report)
    return GeneCall(gene, source, status, diplotypes, reason, messages, shown or None,
                    _text(report.get("phenotypeVersion")), _text(report.get("alleleDefinitionVersion")))


def _diplotype(d: Any, where: str) -> CalledDiplotype:
    if not isinstance(d, dict):
        raise CdsError(f"{where} is not an object")
    names: list[str] = []
    functions: list[str] = []
    for key in ("allele1", "allele2"):
        allele = d.get(key)
        if allele is None:
            continue           # a haploid call (MT-RNR1) has no second allele
        name = _text(allele.get("name")) if isinstance(allele, dict) else None
        if name is None:
            raise CdsError(f"{where}.{key} has no allele name")
        names.append(name)
        function = _text(allele.get("function"))
        if function:
            functions.append(function)
    if not names:
        raise CdsError(f"{where} names no allele")
    return CalledDiplotype("/".join(names), _text(d.get("label")) or "/".join(names),
                           tuple(_texts(d.get("phenotypes"))), _text(d.get("activityScore")),
                           tuple(_texts(d.get("lookupKey"))), d.get("combination") is True, tuple(functions))


def _status(gene: str, source: str, diplotypes: tuple[CalledDiplotype, ...], report: dict) -> tuple[str, str | None]:
    known = [d for d in diplotypes if not _unknown(d)]
    if not known:
        return NO_RESULT, f"PharmCAT has no {gene} call (callSource {source})"
    if len(diplotypes) > 1:
        ambiguity = [m for m in (_message(x) for x in report.get("messages") or []
                                 if isinstance(x, dict) and x.get("exception_type") == "ambiguity") if m]
        listed = "; ".join(_described(d) for d in diplotypes)
        return INDETERMINATE, (f"PharmCAT could not decide between {len(diplotypes)} {gene} diplotypes ({listed})"
                               + (f": {' '.join(ambiguity)}" if ambiguity else ""))
    only = diplotypes[0]
    if only.combination:
        return INDETERMINATE, (f"PharmCAT called a combination of {gene} alleles ({only.label}), which CPIC "
                               "assigns no function or phenotype")
    return CALLED, None


def _unknown(d: CalledDiplotype) -> bool:
    return (d.lookup_keys == (_NO_RESULT_KEY,) or d.phenotypes == (_NO_RESULT_KEY,)
            or all(part == _UNKNOWN_ALLELE for part in (d.text or "").split("/")))


def _described(d: CalledDiplotype) -> str:
    meaning = d.activity_score or ", ".join(d.phenotypes)
    return f"{d.label} ({meaning})" if meaning else (d.label or d.text or "")


def _message(m: Any) -> str | None:
    return _text(m.get("message")) if isinstance(m, dict) else None


def _text(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return value.strip() or None if isinstance(value, str) else None


def _texts(values: Any) -> list[str]:
    return [t for t in (_text(v) for v in values or []) if t] if isinstance(values, list) else []


# --- outside calls (TSV) -----------------------------------------------------------------------

def read_outside_calls(text: str, name: str = "the file") -> PharmcatResults:
    """An outside-call file: `GENE<TAB>diplotype[<TAB>phenotype[<TAB>activity score]]` per line; lines
    starting with '#' and blank lines are ignored; several diplotypes are joined by ' or '."""
    calls: list[GeneCall] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        gene = fields[0]
        diplotype, phenotype, score = ([*fields[1:4], "", "", ""])[:3]
        if len(fields) > 4 and any(fields[4:]):
            raise CdsError(f"{name}:{number}: more than 4 tab-separated fields (gene, diplotype, phenotype, "
                           "activity score)")
        if not gene or " " in gene:
            raise CdsError(f"{name}:{number}: the first field must be the gene symbol (fields are separated by tabs)")
        if not (diplotype or phenotype or score):
            raise CdsError(f"{name}:{number}: {gene} states no diplotype, phenotype or activity score")
        if gene in seen:
            raise CdsError(f"{name}:{number}: a second call for {gene} (the first is on line {seen[gene]})")
        seen[gene] = number
        calls.append(_outside_call(gene, diplotype, phenotype, score, number))
    if not calls:
        raise CdsError(f"{name}: no calls (an outside-call file has a GENE<TAB>diplotype line per gene)")
    return PharmcatResults(OUTSIDE_CALL_TSV, tuple(calls))


def _outside_call(gene: str, diplotype: str, phenotype: str, score: str, line: int) -> GeneCall:
    texts = [t.strip() for t in diplotype.split(" or ")] if diplotype else [None]
    diplotypes = tuple(CalledDiplotype(t, t, (phenotype,) if phenotype else (), score or None) for t in texts)
    if len(diplotypes) > 1:
        reason = f"the outside call names {len(diplotypes)} possible {gene} diplotypes ({diplotype})"
        return GeneCall(gene, OUTSIDE, INDETERMINATE, diplotypes, reason, line=line)
    return GeneCall(gene, OUTSIDE, CALLED, diplotypes, line=line)
