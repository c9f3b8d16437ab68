"""`cds import cpic PATH`: generate guidelines/ YAML from a CPIC export.

Input (PATH, laid out as ../shared/cpic):
- genes/<GENE>.json and guidelines/CPIC_*.json: the PharmGKB/PharmCAT export of CPIC (allele
  functions, every diplotype with its phenotype, guideline annotations with citations and flags);
- v<release>/cpic_*.tsv (optional, newer): the CPIC database release tables (alleles, drugs with
  RxNorm codes, recommendations, gene-result texts).

Policy (why the YAML looks the way it does):
- Allele functions and recommendations come from the newest release present (CPIC's newest evidence);
  the older export supplies what the release tables lack: the function-pair → phenotype rules and
  activity-score ranges (derived from its complete diplotype table, so we encode the *rule*, not the
  14,706 CYP2D6 rows), citations, guideline URLs, drug grouping and the curators' flags.
- Nothing is filled in: an allele the release gives no function stays without one (Indeterminate), a
  function that appears in no CPIC phenotype rule yields Indeterminate, a drug without a citable
  guideline is left out and reported.
- Output is sorted and stable, so a new CPIC release shows up as a reviewable diff.
"""
from __future__ import annotations

import csv
import html
import itertools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from cds.errors import CdsError
from cds.genotype import parse_score
from cds.knowledge.dpwg_keys import ALLELE_STATUS

LEGACY_EXPORT = "PharmGKB/PharmCAT CPIC export"
HLA_GENES = ("HLA-A", "HLA-B")


@dataclass
class ImportReport:
    genes_written: list[str] = field(default_factory=list)
    guidelines_written: list[str] = field(default_factory=list)
    allele_changes: list[str] = field(default_factory=list)      # function changed by the newer release
    recommendations_changed: int = 0                             # newer release text/classification differs
    recommendations_dropped: list[str] = field(default_factory=list)
    drugs_left_out: list[str] = field(default_factory=list)
    drugs_by_name: list[str] = field(default_factory=list)
    errata_applied: list[str] = field(default_factory=list)
    alleles_removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"gene tables written: {len(self.genes_written)}",
            f"guidelines written: {len(self.guidelines_written)}",
            f"allele functions changed by the newer release: {len(self.allele_changes)}",
            f"recommendations whose text or classification the newer release changed: {self.recommendations_changed}",
            "recommendations of the older export that the newer release no longer has: "
            f"{len(self.recommendations_dropped)}",
        ]
        lines.append(f"alleles CPIC deleted, left out of the tables: {len(self.alleles_removed)}"
                     + (f" ({', '.join(self.alleles_removed)})" if self.alleles_removed else ""))
        lines.append(f"errata applied: {len(self.errata_applied)}")
        lines += [f"  {e}" for e in self.errata_applied]
        if self.drugs_left_out:
            lines.append(f"drugs left out ({len(self.drugs_left_out)}): " + "; ".join(self.drugs_left_out))
        if self.drugs_by_name:
            lines.append(f"drugs without an RxNorm code, matched by name ({len(self.drugs_by_name)}): "
                         + "; ".join(self.drugs_by_name))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# --- reading the sources -----------------------------------------------------------------------


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@dataclass
class Release:
    """The CPIC database release tables (optional)."""

    name: str
    alleles: dict[str, dict[str, dict[str, str]]]     # gene → allele → row
    drugs_by_pharmgkb: dict[str, dict[str, str]]
    recommendations: list[dict[str, str]]
    gene_results: list[dict[str, str]]
    pair_pmids: dict[tuple[str, str], list[str]]      # (gene, drug) → PMIDs CPIC cites for the pair
    drugs_by_name: dict[str, dict[str, str]] = field(default_factory=dict)
    guidelines: list[dict[str, str]] = field(default_factory=list)     # cpic_guidelines.tsv: URL, genes, drugs
    changelog: list[dict[str, str]] = field(default_factory=list)      # cpic_data_changelog.tsv, newest first


def _find_release(src: Path, errata: list[dict[str, str]] | None = None,
                  report: ImportReport | None = None) -> Release | None:
    candidates = sorted(p for p in src.glob("v*") if p.is_dir() and list(p.glob("cpic_alleles_*.tsv")))
    if not candidates:
        return None
    rel = candidates[-1]
    name = "CPIC database release " + rel.name.lstrip("v")

    def one(pattern: str) -> Path:
        found = sorted(rel.glob(pattern))
        if not found:
            raise CdsError(f"{rel}: missing {pattern}")
        return found[-1]

    alleles: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for row in _read_tsv(one("cpic_alleles_*.tsv")):
        alleles[row["gene"]][row["allele"]] = row
    drugs = _read_tsv(one("cpic_drugs_*.tsv"))
    recommendations_path, results_path = one("cpic_recommendations_*.tsv"), one("cpic_gene_results_cds_*.tsv")
    recommendations, gene_results = _read_tsv(recommendations_path), _read_tsv(results_path)
    _apply_errata(errata or [], {recommendations_path.name: recommendations, results_path.name: gene_results}, report)
    def optional(pattern: str) -> list[dict[str, str]]:
        return _read_tsv(sorted(rel.glob(pattern))[-1]) if list(rel.glob(pattern)) else []

    return Release(
        name=name,
        alleles=dict(alleles),
        drugs_by_pharmgkb={r["pharmgkbid"]: r for r in drugs if r["pharmgkbid"]},
        recommendations=recommendations,
        gene_results=gene_results,
        pair_pmids={(r["gene"], r["drugname"]): [p.strip() for p in r["citations_pmids"].split(",") if p.strip()]
                    for r in _read_tsv(one("cpic_pairs_*.tsv"))},
        drugs_by_name={r["name"]: r for r in drugs},
        guidelines=optional("cpic_guidelines.tsv"),
        changelog=optional("cpic_data_changelog.tsv"),
    )


# --- errata: where the source itself is wrong ---------------------------------------------------


def read_errata(path: Path) -> list[dict[str, str]]:
    """guidelines/errata/cpic.tsv: table, id, field, original, corrected, why (lines starting with # are comments)."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    for n, row in enumerate(rows, 1):
        missing = [k for k in ("table", "id", "field", "original", "corrected", "why")
                   if not (row.get(k) or "").strip()]
        if missing:
            raise CdsError(f"{path}: erratum {n}: empty {', '.join(missing)}")
    return rows


def _apply_errata(errata: list[dict[str, str]], tables: dict[str, list[dict[str, str]]],
                  report: ImportReport | None) -> None:
    """Correct the release rows in place, CPIC's text with CPIC's evident typo fixed. An erratum whose
    original text is no longer in its row fails the import: the source changed and the list needs review."""
    for e in errata:
        rows = tables.get(e["table"])
        if rows is None:
            if report is not None:
                report.notes.append(f"erratum for {e['table']} row {e['id']} not applied: that table is not the one "
                                    "imported")
            continue
        row = next((r for r in rows if r.get("id") == e["id"]), None)
        if row is None or row.get(e["field"], "").count(e["original"]) != 1:
            raise CdsError(f"erratum {e['table']} row {e['id']} {e['field']}: the text {e['original']!r} is not "
                           "(exactly once) in the source any more; review guidelines/errata/cpic.tsv")
        row[e["field"]] = row[e["field"]].replace(e["original"], e["corrected"])
        if report is not None:
            report.errata_applied.append(f"{e['table']} row {e['id']} {e['field']}: {e['original']!r} -> "
                                         f"{e['corrected']!r}")


# --- gene tables -------------------------------------------------------------------------------


def _expand(diplotypekey: dict[str, int]) -> list[str]:
    alleles: list[str] = []
    for name, count in diplotypekey.items():
        alleles += [name] * count
    return alleles


def _canonical(function: str, known: Iterable[str]) -> str:
    """Spell a release's function string as the older table does when they differ only in case."""
    for k in known:
        if k.lower() == function.lower():
            return k
    return function


def build_gene_table(legacy: dict[str, Any], release: Release | None, report: ImportReport) -> dict[str, Any]:
    gene = legacy["gene"]
    activity_gene = bool(legacy.get("activityValues"))
    named = {a["name"]: a for a in legacy.get("namedAlleles") or []}
    legacy_function = {name: (named[name]["functionValue"] if name in named else fn)
                       for name, fn in legacy["haplotypes"].items()}
    legacy_activity = dict(legacy.get("activityValues") or {})
    known_functions = set(filter(None, legacy_function.values()))

    # Phenotype rules from the complete legacy diplotype table, keyed by the legacy functions.
    by_key: dict[Any, Counter] = defaultdict(Counter)
    for row in legacy["diplotypes"]:
        pair = _expand(row["diplotypekey"])
        result = row.get("phenotype") or row["generesult"]
        if activity_gene:
            by_key[row["activityScore"]][result] += 1
        else:
            by_key[tuple(sorted(legacy_function[a] for a in pair))][result] += 1
    exceptions: dict[str, str] = {}
    rules: list[dict[str, Any]] = []
    ranges: list[dict[str, Any]] = []
    if activity_gene:
        spans: dict[str, list[Decimal]] = defaultdict(list)
        unbounded: set[str] = set()
        for score, counted in by_key.items():
            if len(counted) > 1:
                raise CdsError(f"{gene}: activity score {score} maps to several phenotypes {dict(counted)}")
            phenotype = next(iter(counted))
            parsed = parse_score(score)
            if parsed is None:
                continue  # "n/a" → Indeterminate, handled by the interpreter
            value, at_least = parsed
            spans[phenotype].append(value)
            if at_least:
                unbounded.add(phenotype)
        for phenotype, values in sorted(spans.items(), key=lambda kv: min(kv[1])):
            ranges.append({"min": float(min(values)), "max": None if phenotype in unbounded else float(max(values)),
                           "phenotype": phenotype})
        _check_ranges_disjoint(gene, ranges)
    else:
        for functions, counted in sorted(by_key.items()):
            phenotype, _ = counted.most_common(1)[0]
            rules.append({"functions": list(functions), "phenotype": phenotype})
            if len(counted) > 1:  # CPIC's table contradicts the pair rule: keep its answer per diplotype
                for row in legacy["diplotypes"]:
                    pair = _expand(row["diplotypekey"])
                    result = row.get("phenotype") or row["generesult"]
                    if tuple(sorted(legacy_function[a] for a in pair)) == functions and result != phenotype:
                        exceptions[row["diplotype"]] = result

    # Alleles: the release's function and activity where it has them, else the legacy ones; an allele
    # the release no longer has and its change log says CPIC deleted leaves the table.
    newer = (release.alleles.get(gene) if release else None) or {}
    removed = {name: note for name in legacy_function if newer and name not in newer
               for note in [_removal_in_changelog(release, gene, name)] if note}
    for name in removed:
        report.alleles_removed.append(f"{gene} {name}")
    exceptions = {d: p for d, p in exceptions.items() if not any(a in removed for a in re.split(r"/", d))}
    alleles: dict[str, dict[str, str]] = {}
    release_name = release.name if release else LEGACY_EXPORT
    for name in sorted((set(legacy_function) | set(newer)) - set(removed), key=_allele_sort_key):
        entry: dict[str, str] = {}
        old_fn = legacy_function.get(name)
        new_row = newer.get(name)
        new_fn = _canonical(new_row["clinical_functional_status"],
                            known_functions) if new_row and new_row["clinical_functional_status"] else None
        function = new_fn or old_fn
        if activity_gene:
            activity = (new_row["activity_value"] if new_row and new_row["activity_value"]
                        else None) or legacy_activity.get(name) or "n/a"
            if function:
                entry["function"] = function
            entry["activity"] = activity
        elif function:
            entry["function"] = function
        if new_row is None and newer:
            entry["note"] = (f"not in the {release_name} allele table; function from the {LEGACY_EXPORT} "
                             f"{legacy['version']}")
        elif old_fn is not None and new_fn is not None and new_fn != old_fn and not activity_gene:
            entry["note"] = f"{release_name} changed the function from '{old_fn}'"
            report.allele_changes.append(f"{gene} {name}: {old_fn} -> {new_fn}")
        elif (old_fn is None and new_row is not None and not function
              and not (activity_gene and entry.get("activity") != "n/a")):
            entry["note"] = f"{release_name} assigns no function"
        alleles[name] = entry

    notes: list[str] = []
    unruled: list[str] = []
    if not activity_gene:
        if release and _functions_without_rule(alleles, rules):
            # Functions the 2024 table never paired (e.g. TPMT/NUDT15 "Decreased function", new in 1.54):
            # CPIC's result definitions of the release say which pairs give which phenotype.
            rules = _rules_with_definitions(gene, rules, alleles, release)
        unruled = _functions_without_rule(alleles, rules)
        for fn in unruled:
            names = [n for n, a in alleles.items() if a.get("function") == fn]
            notes.append(f"'{fn}' ({', '.join(names[:8])}{'…' if len(names) > 8 else ''}) appears in no CPIC phenotype "
                         "rule "
                         "of the diplotype table: diplotypes with it are Indeterminate until CPIC publishes one.")
    for name, note in sorted(removed.items(), key=lambda kv: _allele_sort_key(kv[0])):
        notes.append(f"{name} left the table: {note}")
    aliases = _renamed_in_changelog(release, gene, alleles)
    table: dict[str, Any] = {
        "gene": gene,
        "kind": "activity-score" if activity_gene else "function-pair",
        "sources": _gene_sources(legacy, release, activity_gene),
        "alleles": alleles,
    }
    if aliases:
        table["aliases"] = aliases
    if rules:
        table["phenotype_rules"] = rules
    if ranges:
        table["score_ranges"] = ranges
    if exceptions:
        table["diplotype_exceptions"] = dict(sorted(exceptions.items()))
    results = _gene_results(gene, release)
    if results:
        table["results"] = results
    if unruled:
        table["functions_without_rule"] = unruled
    if notes:
        table["notes"] = notes
    return table


def _functions_without_rule(alleles: dict[str, dict[str, str]], rules: list[dict[str, Any]]) -> list[str]:
    used = {f for r in rules for f in r["functions"]}
    return sorted({a["function"] for a in alleles.values() if a.get("function") and a["function"] not in used})


def _removal_in_changelog(release: Release | None, gene: str, allele: str) -> str | None:
    """The newest change-log entry saying CPIC deleted, removed or renamed `allele` of `gene`, cited."""
    named = re.compile(r"(?<![\w*.>])" + re.escape(allele) + r"(?![\w>])")
    if release is None:
        return None
    for row in release.changelog:
        note = row["Note of Change"]
        if row["Subject"] == gene and re.search(r"(?i)delet|remov|chang", note) and named.search(note):
            return (f"{release.name} change log, {row['Date of Change']} ({row['Type of Data']}): "
                    f"{' '.join(note.split())}")
    return None


# How CPIC's change log says an allele took another name: 'Change "Telti/Kobe" to "Telti, Kobe" …' (G6PD),
# 'Changed m.930A>G to m.930G>A and added rsID' (MT-RNR1), '*2 has become a sub-allele of *3' (NUDT15).
_RENAMES = [
    re.compile(r'\bChanged? "(?P<old>[^"]+)" to "(?P<new>[^"]+)"'),
    re.compile(r'\bChanged? (?P<old>[^\s"]+) to (?P<new>[^\s";,]+)'),
    re.compile(r'(?P<old>\*\w+) has become a sub-allele of (?P<new>\*\w+)'),
]


def _renamed_in_changelog(release: Release | None, gene: str, alleles: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Former name → {allele, source}: every change-log row of `gene` saying an allele the table no longer
    has took the name of one it has, cited by date, kind and text (newest row first)."""
    out: dict[str, dict[str, str]] = {}
    if release is None:
        return out
    for row in release.changelog:
        if row["Subject"] != gene:
            continue
        note = " ".join(row["Note of Change"].split())
        for pattern in _RENAMES:
            m = pattern.search(note)
            if m and m.group("old") not in alleles and m.group("new") in alleles and m.group("old") not in out:
                out[m.group("old")] = {"allele": m.group("new"), "source": (
                    f"{release.name} change log, {row['Date of Change']} ({row['Type of Data']}): {note}")}
    return dict(sorted(out.items(), key=lambda kv: _allele_sort_key(kv[0])))


_DEFINITION = re.compile(r"This result signifies that the patient has (?P<body>.+?)\.(?:\s|$)")
_CLAUSES = [  # CPIC's wordings of a genotype in the gene-result texts, one copy per allele
    (re.compile(r"two copies of an? (?P<a>.+?) allele"), "both"),
    (re.compile(r"one copy of an? (?P<a>.+?) allele and one copy of an? (?P<b>.+?) allele"), "pair"),
    (re.compile(r"inherited two (?P<a>.+?) alleles"), "both"),
    (re.compile(r"inherited one (?P<a>.+?) allele and one (?P<b>.+?) allele"), "pair"),
    (re.compile(r"inherited an allele combination with (?P<a>.+?) alleles"), "any"),
]


def definition_pairs(gene: str, text: str, functions: Iterable[str]) -> set[tuple[str, str]]:
    """The function pairs one CPIC gene-result text defines: "two copies of a no function allele OR one
    copy of a no function allele and one copy of a decreased function allele" → {(No, No), (Decreased, No)}.
    A wording this does not know is an error, never a guess."""
    functions = sorted(set(functions))
    m = _DEFINITION.search(text)
    if not m:
        raise CdsError(f"{gene}: result text has no 'This result signifies that the patient has …' definition: "
                       f"{text[:80]!r}")

    def named(phrase: str) -> list[str]:
        words = re.fullmatch(r"(.+?) function", phrase.strip())
        out = []
        for word in re.split(r"\s+(?:and/or|or)\s+", words.group(1)) if words else [phrase]:
            match = [f for f in functions if f.lower() == f"{word} function".lower()]
            if not match:
                raise CdsError(f"{gene}: result definition names '{phrase}', which is no function of the allele table")
            out.append(match[0])
        return out

    pairs: set[tuple[str, str]] = set()
    for clause in re.split(r"\s+OR\s+", m.group("body")):
        for pattern, shape in _CLAUSES:
            c = pattern.fullmatch(clause.strip())
            if not c:
                continue
            a = named(c.group("a"))
            b = named(c.group("b")) if shape == "pair" else a if shape == "both" else functions
            pairs |= {(min(x, y), max(x, y)) for x in a for y in b}
            break
        else:
            raise CdsError(f"{gene}: cannot read the result definition clause {clause!r}")
    return pairs


def _rules_with_definitions(gene: str, rules: list[dict[str, Any]], alleles: dict[str, dict[str, str]],
                            release: Release) -> list[dict[str, Any]]:
    """Add the pair rules CPIC's result definitions give and the diplotype table lacks, each citing its row.
    A definition that contradicts a rule of the diplotype table stops the import."""
    functions = {a["function"] for a in alleles.values() if a.get("function")}
    known = {tuple(r["functions"]): r["phenotype"] for r in rules}
    added: dict[tuple[str, str], dict[str, Any]] = {}
    for row in release.gene_results:
        if row["gene"] != gene or row["activity_score"] not in ("", "n/a"):
            continue
        for pair in sorted(definition_pairs(gene, row["consultation_text"], functions)):
            phenotype, rule = row["result"], known.get(pair) or (added[pair]["phenotype"] if pair in added else None)
            if rule is not None:
                if rule != phenotype:
                    raise CdsError(f"{gene}: CPIC's result definition '{phenotype}' (row {row['id']}) contradicts the "
                                   f"rule {' + '.join(pair)} → {rule}")
                continue
            added[pair] = {"functions": list(pair), "phenotype": phenotype,
                           "source": f"{release.name} gene-result definition of {gene} {phenotype} "
                                     f"(cpic_gene_results_cds id {row['id']})"}
    return sorted(rules + list(added.values()), key=lambda r: tuple(r["functions"]))


def build_release_gene_table(gene: str, release: Release, report: ImportReport) -> dict[str, Any]:
    """A function-pair gene that only the release has (e.g. NAT2): allele functions from its allele table,
    pair rules from its result definitions."""
    alleles = {}
    for name in sorted(release.alleles[gene], key=_allele_sort_key):
        function = release.alleles[gene][name]["clinical_functional_status"]
        alleles[name] = {"function": function} if function else {"note": f"{release.name} assigns no function"}
    rules = _rules_with_definitions(gene, [], alleles, release)
    table: dict[str, Any] = {
        "gene": gene,
        "kind": "function-pair",
        "sources": [{"name": f"{release.name}: allele functionality, gene-result texts and the pair rules they define",
                     "version": release.name.split()[-1], "url": "https://github.com/cpicpgx/cpic-data"}],
        "alleles": alleles,
        "phenotype_rules": rules,
    }
    results = _gene_results(gene, release)
    if results:
        table["results"] = results
    unruled = _functions_without_rule(alleles, rules)
    if unruled:
        table["functions_without_rule"] = unruled
        table["notes"] = [f"'{fn}' appears in no CPIC result definition: diplotypes with it are Indeterminate."
                          for fn in unruled]
    return table


def _gene_sources(legacy: dict[str, Any], release: Release | None, activity_gene: bool) -> list[dict[str, str]]:
    sources = [{
        "name": f"{LEGACY_EXPORT}: diplotype-phenotype table" + (" (activity score ranges)" if activity_gene
                                                                 else " (function-pair rules)"),
        "version": legacy["version"],
        "url": "https://www.pharmgkb.org/page/pgxGeneRef",
    }]
    if release:
        sources.append({"name": f"{release.name}: allele functionality, activity values and gene-result texts",
                        "version": release.name.split()[-1], "url": "https://github.com/cpicpgx/cpic-data"})
    return sources


def _check_ranges_disjoint(gene: str, ranges: list[dict[str, Any]]) -> None:
    for a, b in itertools.pairwise(ranges):
        if a["max"] is None or a["max"] >= b["min"]:
            raise CdsError(f"{gene}: activity score ranges overlap: {a} and {b}")


def _gene_results(gene: str, release: Release | None) -> list[dict[str, str]]:
    if not release:
        return []
    out = []
    for row in release.gene_results:
        if row["gene"] != gene:
            continue
        result = row["result"] if row["activity_score"] in ("", "n/a") else row["activity_score"]
        item = {"result": result}
        if row["ehr_priority"] and row["ehr_priority"] != "none":
            item["priority"] = " ".join(row["ehr_priority"].split())
        if row["consultation_text"]:
            item["consultation"] = cpic_text(row["consultation_text"])
        out.append(item)
    return sorted(out, key=lambda r: _allele_sort_key(r["result"]))


def build_hla_table(gene: str, release: Release, guideline_keys: set[str],
                    dpwg: DpwgHlaAlleles | None = None) -> dict[str, Any]:
    alleles = sorted(release.alleles.get(gene, {}), key=_allele_sort_key)
    in_keys = sorted({k.split()[0] for k in guideline_keys if k.startswith("*")}, key=_allele_sort_key)
    if set(in_keys) - set(alleles):
        raise CdsError(f"{gene}: guideline lookup keys name alleles missing from the release table: "
                       f"{set(in_keys) - set(alleles)}")
    table: dict[str, Any] = {
        "gene": gene,
        "kind": "allele-status",
        "sources": [{"name": f"{release.name}: HLA alleles of interest and gene-result texts",
                     "version": release.name.split()[-1], "url": "https://github.com/cpicpgx/cpic-data"}],
        "alleles_of_interest": alleles,
        "notes": [f"CPIC reads {gene} as the presence ('positive') or absence ('negative') of each allele of "
                  "interest; a two-field match is presence (e.g. *57:01:01 is *57:01)."],
    }
    # An allele DPWG keys a recommendation by, and CPIC none, is an allele of interest too: without it a
    # carrier would read as negative for everything DPWG warns about (HLA-B*15:11 and carbamazepine).
    extra = {a: names for a, names in (dpwg.alleles.get(gene, {}) if dpwg else {}).items() if a not in alleles}
    if dpwg and extra:
        table["alleles_of_interest"] = sorted([*alleles, *extra], key=_allele_sort_key)
        table["sources"].append({"name": f"{dpwg.export}: HLA alleles DPWG keys recommendations by",
                                 "version": dpwg.version, "url": "https://www.pharmgkb.org/guidelineAnnotations"})
        for allele, names in sorted(extra.items()):
            table["notes"].append(f"{allele} is an allele of interest because DPWG keys a recommendation by it "
                                  f"({'; '.join(sorted(names))}); CPIC keys none by it and has no result text "
                                  "for it.")
    results = _gene_results(gene, release)
    if results:
        table["results"] = results
    return table


@dataclass
class DpwgHlaAlleles:
    """The HLA alleles DPWG's export keys recommendations by ('<allele> positive|negative'), with the
    guidelines that do so."""
    export: str
    version: str
    alleles: dict[str, dict[str, set[str]]]     # gene → allele → guideline names


def read_dpwg_hla_alleles(folder: Path) -> DpwgHlaAlleles | None:
    """From the DPWG export beside the CPIC export (../shared/cpic/dpwg); None when there is none."""
    paths = sorted(folder.glob("DPWG_*.json")) if folder.is_dir() else []
    if not paths:
        return None
    alleles: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    versions = set()
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        versions.add(data["version"])
        for rec in data["recommendations"]:
            for gene, value in (rec.get("lookupKey") or {}).items():
                status = ALLELE_STATUS.fullmatch(value) if gene in HLA_GENES else None
                if status:
                    alleles[gene][status.group(1)].add(f"{data['guideline']['name']}, {data['guideline']['id']}")
    if len(versions) != 1:
        raise CdsError(f"{folder}: DPWG files of more than one export ({', '.join(sorted(versions))})")
    version = versions.pop()
    return DpwgHlaAlleles(f"PharmGKB export of the DPWG guidelines {version}", version,
                          {gene: dict(by_allele) for gene, by_allele in alleles.items()})




def _allele_sort_key(name: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name))


# --- guidelines --------------------------------------------------------------------------------


def _guideline_id(path: Path) -> str:
    stem = path.stem
    source, _, rest = stem.partition("_")
    return f"{source.lower()}-" + rest.replace("_and_", "-").replace("_", "-").lower()


def cpic_text(value: str) -> str:
    """CPIC's text as CPIC means it: the release files write a line break as the two characters
    backslash and n; every other run of whitespace is one space."""
    lines = [" ".join(line.split()) for line in value.replace("\\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = cpic_text(value)
    return None if value in ("", "n/a") else value


def _split_implications(text: str, genes: Iterable[str]) -> dict[str, str]:
    marks = sorted((m.start(), g) for g in genes for m in re.finditer(re.escape(g) + r": ", text))
    out: dict[str, str] = {}
    for i, (start, gene) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        value = _text(text[start + len(gene) + 2:end].rstrip("; "))
        if value:
            out[gene] = value
    whole = _text(text)
    if not marks and whole:
        out["*"] = whole
    return out


def _html_text(h: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", h)).split())


def _population(value: str | None) -> str:
    return " ".join((value or "").split()) or "general"


def build_guideline(path: Path, legacy: dict[str, Any], release: Release | None, cpic_urls: dict[str, str],
                    citations_by_pmid: dict[str, dict[str, Any]], report: ImportReport) -> dict[str, Any]:
    g = legacy["guideline"]
    gid = _guideline_id(path)
    genes = sorted(x["symbol"] for x in g["relatedGenes"])
    drugs = []
    for chem in sorted(g["relatedChemicals"], key=lambda c: c["name"]):
        rel = release.drugs_by_pharmgkb.get(chem["id"]) if release else None
        drug = {"name": chem["name"], "pharmgkb": chem["id"]}
        if release and rel and rel["rxnormid"]:
            drug["rxnorm"] = rel["rxnormid"]
            drug["rxnorm_source"] = f"{release.name}, cpic_drugs table ({rel['drugid']})"
        drugs.append(drug)

    # Legacy recommendations by (drug, population, lookup) for their flags and for the diff report.
    legacy_recs: dict[tuple, dict[str, Any]] = {}
    for rec in legacy["recommendations"]:
        for chem in rec["relatedChemicals"]:
            lookup_json = json.dumps(rec["lookupKey"], sort_keys=True)
            legacy_recs[(chem["name"], _population(rec["population"]), lookup_json)] = rec

    recs: list[dict[str, Any]] = []
    drug_names = {d["name"] for d in drugs}
    if release:
        for row in release.recommendations:
            if row["drugname"] not in drug_names:
                continue
            lookup = json.loads(row["lookupkey_json(reconstructed)"])
            population = _population(row["population"])
            key = (row["drugname"], population, json.dumps(lookup, sort_keys=True))
            old = legacy_recs.pop(key, None)
            rec = _release_recommendation(row, lookup, population, old, release)
            if old is not None and _differs(old, rec):
                report.recommendations_changed += 1
            recs.append(rec)
        for (drug, population, key), _old in sorted(legacy_recs.items()):
            report.recommendations_dropped.append(f"{gid}: {drug} [{population}] {key}")
    else:
        for (drug, population, _key), old in sorted(legacy_recs.items()):
            recs.append(_legacy_recommendation(old, drug, population, legacy["version"]))
    recs.sort(key=lambda r: (r["drug"], r["population"], sorted(r["lookup"].items())))

    citations = legacy["citations"]
    notes: list[str] = []
    if not citations and release:
        # The annotation lists no publication; CPIC's pair table names the PMIDs for these gene-drug pairs,
        # and the export's other annotations carry their titles.
        pmids = sorted({p for gene in genes for d in drug_names for p in release.pair_pmids.get((gene, d), [])})
        citations = [citations_by_pmid[p] for p in pmids if p in citations_by_pmid]
        if citations:
            notes.append(f"Citation taken from the {release.name} gene-drug pair table (PMID "
                         f"{', '.join(c['pmid'] for c in citations)}); the annotation itself lists none.")
    citations = sorted(citations, key=lambda c: (-int(c["year"]), c["pmid"]))
    url = cpic_urls.get(g["id"]) or _cpic_url_for(drug_names, cpic_urls)
    out: dict[str, Any] = {
        "id": gid,
        "name": g["name"].replace("Annotation of ", ""),
        "source": g["source"],
        "url": url or g["url"],
        "annotation_url": g["url"],
        "pharmgkb_id": g["id"],
        "citations": [{"pmid": c["pmid"], "title": c["title"], "year": int(c["year"]), "journal": c.get("journal")}
                      for c in citations],
        "version": (f"{release.name} (recommendations); " if release else "")
                   + f"{LEGACY_EXPORT} {legacy['version']}, annotation version {g.get('version')}",
        "genes": genes,
        "drugs": drugs,
        "recommendations": recs,
    }
    if not recs:
        notes.append("CPIC publishes no lookup-table recommendations for this guideline in the encoded releases "
                     "(see the guideline: dosing algorithm or narrative guidance).")
    if notes:
        out["notes"] = notes
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def build_release_guideline(drug: str, release: Release, citations_by_pmid: dict[str, dict[str, Any]],
                            report: ImportReport) -> dict[str, Any] | None:
    """A drug whose recommendations only the release has (no guideline annotation of the export lists it,
    e.g. metoprolol, hydralazine, most G6PD drugs): cited from CPIC's guideline table (URL, genes) and
    pair table (PMIDs). There are no curator flags to go with these recommendations."""
    rows = [r for r in release.recommendations if r["drugname"] == drug]
    genes = sorted({g for r in rows for g in json.loads(r["lookupkey_json(reconstructed)"])})
    guideline = next((g for g in release.guidelines
                      if drug in [d.strip() for d in g["drugs"].split(";")]
                      and set(genes) <= {x.strip() for x in g["genes"].split(";")}), None)
    info = release.drugs_by_name.get(drug) or {}
    rxnorm = info.get("rxnormid", "")
    if guideline is None:
        report.drugs_left_out.append(f"{drug}: no guideline of the release's guideline table covers it with "
                                     f"{', '.join(genes)}")
        return None
    if not rxnorm.isdigit():
        report.drugs_by_name.append(f"{drug}: the release's drug table gives no RxNorm code "
                                    f"({info.get('drugid') or 'no row'}); orders are matched by its name")
    pmids = sorted({p for gene in genes for p in release.pair_pmids.get((gene, drug), [])})
    citations = []
    for pmid in pmids:
        known = citations_by_pmid.get(pmid)
        citations.append({"pmid": pmid, "title": known["title"], "year": int(known["year"]),
                          "journal": known.get("journal")}
                         if known else {"pmid": pmid})
    recs = []
    for row in rows:
        lookup = json.loads(row["lookupkey_json(reconstructed)"])
        recs.append(_release_recommendation(row, lookup, _population(row["population"]), None, release))
    recs.sort(key=lambda r: (r["drug"], r["population"], sorted(r["lookup"].items())))
    notes = [f"In {release.name} only: no guideline annotation of the {LEGACY_EXPORT} lists {drug}. The guideline URL "
             f"and genes are CPIC's guideline table's (ClinPGx {guideline['clinpgx_guideline_id']}), the PMID the "
             "gene-drug "
             "pair table's; the recommendations carry no curator flags."]
    if not citations:
        notes.append("The release data gives no PMID for this guideline: it is cited by its CPIC URL.")
    out: dict[str, Any] = {
        "id": f"cpic-{_slug(drug)}-{'-'.join(_slug(g) for g in genes)}",
        "name": f"CPIC Guideline for {drug} and {' and '.join(genes)}",
        "source": "CPIC",
        "url": guideline["cpic_url"],
        "pharmgkb_id": guideline["clinpgx_guideline_id"],
        "citations": citations,
        "version": f"{release.name} (recommendations, guideline and gene-drug pair tables)",
        "genes": genes,
        "drugs": [{"name": drug, "pharmgkb": info["pharmgkbid"], "rxnorm": rxnorm,
                   "rxnorm_source": f"{release.name}, cpic_drugs table ({info['drugid']})"} if rxnorm.isdigit() else
                  {"name": drug, "pharmgkb": info.get("pharmgkbid"),
                   "no_rxnorm": f"{release.name}'s drug table gives no RxNorm code ({info.get('drugid') or 'no row'}): "
                                "orders are matched by the ingredient's name"}],
        "recommendations": recs,
        "notes": notes,
    }
    return out


def _release_recommendation(row: dict[str, str], lookup: dict[str, str], population: str,
                            old: dict[str, Any] | None, release: Release) -> dict[str, Any]:
    phenotypes = {gene: value for gene, value in json.loads(row["phenotypes_json"] or "{}").items()
                  if value and value != lookup.get(gene)}
    classification = row["classification"].strip()
    rec: dict[str, Any] = {
        "id": f"cpic-{row['id']}",
        "drug": row["drugname"],
        "population": population,
        "lookup": dict(sorted(lookup.items())),
    }
    if phenotypes:
        rec["phenotypes"] = dict(sorted(phenotypes.items()))
    rec["classification"] = None if classification in ("", "n/a") else _classification(classification)
    rec["recommendation"] = cpic_text(row["drugrecommendation"])  # verbatim, even "n/a"
    implications = _split_implications(row["implications_text"] or "", lookup)
    if implications:
        rec["implications"] = implications
    comments = _text(row["comments"])
    if comments:
        rec["comments"] = comments
    if old is not None:
        rec["flags"] = _flags(old)
    rec["source"] = release.name
    if rec["classification"] is None:
        del rec["classification"]
    return rec


def _legacy_recommendation(old: dict[str, Any], drug: str, population: str, version: str) -> dict[str, Any]:
    text = _html_text(old["text"]["html"])
    main, _, other = text.partition(" Other Considerations ")
    rec: dict[str, Any] = {"id": f"pharmgkb-{old['id']}-{drug.replace(' ', '-')}", "drug": drug,
                           "population": population, "lookup": dict(sorted(old["lookupKey"].items()))}
    classification = (old.get("classification") or {}).get("term")
    if classification and classification != "N/A":
        rec["classification"] = _classification(classification)
    rec["recommendation"] = main
    implications = {}
    for item in old.get("implications") or []:
        gene, _, value = item.partition(": ")
        implications[gene] = value
    if implications:
        rec["implications"] = implications
    if other:
        rec["comments"] = other
    rec["flags"] = _flags(old)
    rec["source"] = f"{LEGACY_EXPORT} {version}"
    return rec


def _classification(term: str) -> str:
    return "No Recommendation" if term.lower() == "no recommendation" else term


def _flags(old: dict[str, Any]) -> dict[str, bool]:
    return {"dosing_information": bool(old["dosingInformation"]),
            "alternate_drug_available": bool(old["alternateDrugAvailable"]),
            "other_prescribing_guidance": bool(old["otherPrescribingGuidance"])}


def _differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    old_cls = _classification(((old.get("classification") or {}).get("term") or "n/a").replace("N/A", "n/a"))
    new_cls = new.get("classification", "n/a")
    def norm(s: str) -> str:
        return " ".join(s.replace("’", "'").replace("“", '"').replace("”", '"').split())

    return old_cls != new_cls or not norm(_html_text(old["text"]["html"])).startswith(norm(new["recommendation"]))


def _cpic_url_for(drug_names: set[str], cpic_urls: dict[str, str]) -> str | None:
    for drugs, url in cpic_urls.items():
        if isinstance(drugs, frozenset) and drug_names & drugs:
            return url
    return None


def _cpic_guideline_urls(src: Path, release_dir: Path | None) -> dict[Any, str]:
    """CPIC guideline page URLs, by the drugs each guideline covers (release table) or PharmGKB id."""
    urls: dict[Any, str] = {}
    if release_dir and (release_dir / "cpic_guidelines.tsv").exists():
        for row in _read_tsv(release_dir / "cpic_guidelines.tsv"):
            urls[frozenset(d.strip() for d in row["drugs"].split(";"))] = row["cpic_url"]
    return urls


# --- writing -----------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # CPIC's line breaks stay line breaks a reviewer can read (a folded block), not "\n" escapes.
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=">" if "\n" in value else None)


def _is_short(value: Any) -> bool:
    return not isinstance(value, (dict, list)) and len(str(value)) < 70 and "\n" not in str(value)


def _dict_presenter(dumper: yaml.SafeDumper, value: dict) -> yaml.Node:
    # One line per allele or lookup key keeps tables readable and diffs small; long prose stays in block style.
    flow = all(_is_short(v) for v in value.values()) and sum(len(str(k)) + len(str(v)) + 4 for k,
                                                             v in value.items()) < 100
    return dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=flow)


def _list_presenter(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
    flow = all(_is_short(v) for v in value) and sum(len(str(v)) + 2 for v in value) < 100
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _str_presenter)
_Dumper.add_representer(dict, _dict_presenter)
_Dumper.add_representer(list, _list_presenter)


def dump_yaml(data: Any, header: str) -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    return header + body


GENERATED = ("# Generated by `cds import cpic` from the CPIC data in ../shared/cpic; do not edit by hand.\n"
             "# Regenerate and review the diff when CPIC publishes a new release.\n"
             "# CPIC content: CC0 1.0 (cpicpgx.org). PharmGKB/ClinPGx annotations: CC BY-SA 4.0, attribution to "
             "PharmGKB/ClinPGx.\n")


def default_errata(knowledge_root: Path | None = None) -> Path:
    from cds.knowledge.loader import default_root

    return (knowledge_root or default_root()) / "guidelines" / "errata" / "cpic.tsv"


def import_cpic(src: Path, dest: Path, errata: Path | None = None) -> ImportReport:
    """Write dest/genes/*.yaml and dest/cpic/*.yaml from the CPIC export at `src`, correcting the source
    where the errata list (default: the bundled guidelines/errata/cpic.tsv) says it is wrong."""
    src, dest = Path(src), Path(dest)
    if not (src / "genes").is_dir() or not (src / "guidelines").is_dir():
        raise CdsError(f"{src}: not a CPIC export (expected genes/ and guidelines/ folders)")
    report = ImportReport()
    release = _find_release(src, read_errata(errata or default_errata()), report)
    release_dir = sorted(p for p in src.glob("v*") if p.is_dir())[-1] if release else None
    if release is None:
        report.notes.append("no CPIC database release tables found: allele functions and recommendations come from the "
                            "older export")

    (dest / "genes").mkdir(parents=True, exist_ok=True)
    (dest / "cpic").mkdir(parents=True, exist_ok=True)
    for path in sorted((src / "genes").glob("*.json")):
        legacy = json.loads(path.read_text(encoding="utf-8"))
        table = build_gene_table(legacy, release, report)
        (dest / "genes" / f"{table['gene']}.yaml").write_text(dump_yaml(table, GENERATED), encoding="utf-8")
        report.genes_written.append(table["gene"])
    if release:
        # Genes the release keys recommendations by but the export has no table for (e.g. NAT2).
        keyed = {g for r in release.recommendations for g in json.loads(r["lookupkey_json(reconstructed)"])}
        for gene in sorted(keyed - set(report.genes_written) - set(HLA_GENES)):
            if gene not in release.alleles:
                report.notes.append(f"{gene}: recommendations are keyed by it but the release has no allele table for "
                                    "it")
                continue
            table = build_release_gene_table(gene, release, report)
            (dest / "genes" / f"{gene}.yaml").write_text(dump_yaml(table, GENERATED), encoding="utf-8")
            report.genes_written.append(gene)

    cpic_urls = _cpic_guideline_urls(src, release_dir)
    hla_keys: dict[str, set[str]] = defaultdict(set)
    covered_drugs: set[str] = set()
    legacy_guidelines = {path: json.loads(path.read_text(encoding="utf-8"))
                         for path in sorted((src / "guidelines").glob("*.json"))}
    citations_by_pmid = {c["pmid"]: c for g in legacy_guidelines.values() for c in g["citations"]}
    for path, legacy in legacy_guidelines.items():
        guideline = build_guideline(path, legacy, release, cpic_urls, citations_by_pmid, report)
        for rec in guideline["recommendations"]:
            for gene, value in rec["lookup"].items():
                if gene in HLA_GENES:
                    hla_keys[gene].add(value)
        for drug in guideline["drugs"]:
            covered_drugs.add(drug["name"])
            if not drug.get("rxnorm"):
                report.notes.append(f"{guideline['id']}: {drug['name']} has no RxNorm ingredient code in the sources")
        (dest / "cpic" / f"{guideline['id']}.yaml").write_text(dump_yaml(guideline, GENERATED), encoding="utf-8")
        report.guidelines_written.append(guideline["id"])

    if release:
        dpwg_hla = read_dpwg_hla_alleles(src / "dpwg")
        for gene in HLA_GENES:
            table = build_hla_table(gene, release, hla_keys[gene], dpwg_hla)
            (dest / "genes" / f"{gene}.yaml").write_text(dump_yaml(table, GENERATED), encoding="utf-8")
            report.genes_written.append(gene)
        for drug in sorted({r["drugname"] for r in release.recommendations} - covered_drugs):
            release_only = build_release_guideline(drug, release, citations_by_pmid, report)
            if release_only is None:
                continue
            (dest / "cpic" / f"{release_only['id']}.yaml").write_text(dump_yaml(release_only, GENERATED),
                                                                        encoding="utf-8")
            report.guidelines_written.append(release_only["id"])
    return report
