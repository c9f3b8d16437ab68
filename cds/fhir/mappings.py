"""Load guidelines/fhir-mappings.yaml into lookup tables the FHIR reader uses on every request.

The file says which codes name a gene, what an Observation states, which LOINC answers mean which CPIC
phenotype, and how HLA presence is written. It is validated once at start-up; a fault raises
`KnowledgeError` with file and line, like the rest of the knowledge base.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cds.bundle import bundled_root
from cds.errors import Diagnostic, KnowledgeError
from cds.knowledge.yamlsrc import SourceMap, YamlSourceError, load_yaml_file
from cds.memo import Memo

DEFAULT_PATH = bundled_root() / "guidelines" / "fhir-mappings.yaml"

Kind = Literal["genotype", "haplotype", "phenotype", "therapeutic-implication"]
States = Literal["genotype", "phenotype", "allele-status", "activity-score", "any"]
Zygosity = Literal["homozygous", "heterozygous", "hemizygous"]


# --- the file's schema ------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Source(_Strict):
    title: str
    url: str | None = None
    note: str | None = None


class _Sourced(_Strict):
    source: str


class _Gene(_Sourced):
    hgnc: str | None = None

    @field_validator("hgnc")
    @classmethod
    def _hgnc_form(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"HGNC:\d+", v):
            raise ValueError(f"'{v}' is not an HGNC id (HGNC:<number>)")
        return v


class _GeneList(_Sourced):
    genes: list[str]


class _System(_Sourced):
    system: str


class _Code(_Sourced):
    system: str
    code: str
    display: str | None = None


class _Url(_Sourced):
    url: str


class _KindCode(_Code):
    kind: Kind


class _PhenotypeAnswer(_Code):
    phenotype: str | None
    note: str | None = None


class _Terms(_Sourced):
    terms: list[str]


class _Synonym(_Sourced):
    text: str
    phenotype: str


class _PresenceAnswer(_Code):
    present: bool


class _Presence(_Sourced):
    present_words: list[str]
    absent_words: list[str]
    answers: list[_PresenceAnswer] = []


class _ZygosityAnswer(_Code):
    zygosity: Zygosity


class _Switch(_Sourced):
    enabled: bool


class _AlleleSpelling(_Sourced):
    genes: list[str]
    pattern: str
    replacement: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"pattern is not a regular expression ({err})") from None
        return v


class _LabCode(_Code):
    gene: str
    states: States
    allele: str | None = None


class _File(_Strict):
    sources: dict[str, _Source]
    genes: dict[str, _Gene]
    allele_status_genes: _GeneList
    gene_code_systems: list[_System]
    gene_studied_components: list[_Code]
    gene_extensions: list[_Url]
    observation_kinds: list[_KindCode]
    phenotype_components: list[_Code]
    medication_components: list[_Code] = []
    phenotype_answers: list[_PhenotypeAnswer]
    phenotype_terms: _Terms
    phenotype_synonyms: list[_Synonym] = []
    allele_presence: _Presence
    zygosity_components: list[_Code]
    zygosity_answers: list[_ZygosityAnswer]
    allele_name_systems: list[_System]
    gl_string_systems: list[_System]
    allele_spellings: list[_AlleleSpelling] = []
    pharmvar_suballele_to_core: _Switch
    lab_codes: list[_LabCode] = []
    text_coded_results: list[_Code] = []
    # each fills a search (hooks/pgx.yaml): an empty one would search for every DiagnosticReport
    genomic_report_categories: list[_Code] = Field(min_length=1)
    genomic_report_codes: list[_Code] = Field(min_length=1)
    rxnorm_systems: list[_System]
    atc_systems: list[_System] = []
    snomed_systems: list[_System] = []


# --- what the reader uses ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LabCode:
    gene: str
    states: str
    allele: str | None


@dataclass(frozen=True)
class FhirMappings:
    """The mappings as lookup tables. Keys of coded lookups are (system, code)."""

    genes: frozenset[str]                                  # HGNC symbols the reader may name
    gene_by_hgnc_number: dict[str, str]                    # "2621" -> "CYP2C19"
    gene_by_folded_symbol: dict[str, str]                  # "cyp2c19" -> "CYP2C19"
    allele_status_genes: frozenset[str]
    gene_code_systems: frozenset[str]
    gene_studied_components: frozenset[tuple[str, str]]
    gene_extensions: frozenset[str]
    observation_kinds: dict[tuple[str, str], str]
    phenotype_components: frozenset[tuple[str, str]]
    medication_components: frozenset[tuple[str, str]]
    phenotype_answers: dict[tuple[str, str], str | None]   # None: deliberately not a CPIC phenotype
    phenotype_by_text: dict[str, str]                      # folded text -> CPIC term
    phenotype_terms: frozenset[str]                        # every CPIC phenotype term
    present_words: tuple[str, ...]
    absent_words: tuple[str, ...]
    presence_answers: dict[tuple[str, str], bool]
    zygosity_components: frozenset[tuple[str, str]]
    zygosity_answers: dict[tuple[str, str], str]
    allele_name_systems: frozenset[str]
    gl_string_systems: frozenset[str]
    allele_spellings: dict[str, tuple[tuple[re.Pattern, str], ...]]   # gene -> (pattern, replacement)
    suballele_to_core: bool
    lab_codes: dict[tuple[str, str], LabCode]
    # Result codes searched for whose gene no cited source fixes: read only where the Observation's
    # own wording names the gene (never the code), so asking for them can only add results.
    text_coded_results: tuple[tuple[str, str], ...]
    # How Genomics Reports are searched for: by category, and (a second search) by report code.
    genomic_report_categories: tuple[tuple[str, str], ...]
    genomic_report_codes: tuple[tuple[str, str], ...]
    rxnorm_systems: frozenset[str]
    atc_systems: frozenset[str]
    snomed_systems: frozenset[str]
    gene_symbol_pattern: re.Pattern                       # finds any known symbol as a whole word


def fold(text: str) -> str:
    """Case- and whitespace-insensitive form of a text, for matching terms."""
    return " ".join(text.split()).casefold()


def load_mappings(path: Path | str | None = None) -> FhirMappings:
    """Read and validate the mappings file; raise `KnowledgeError` (file:line) when it is wrong."""
    path = Path(path) if path else DEFAULT_PATH
    try:
        raw, smap = load_yaml_file(path, display_name=_display(path))
    except FileNotFoundError:
        raise KnowledgeError([Diagnostic(_display(path), 1, "the FHIR mappings file is missing")]) from None
    except YamlSourceError as err:
        raise KnowledgeError(err.diagnostics) from None
    if not isinstance(raw, dict):
        raise KnowledgeError([smap.diag((), "expected a mapping at the top level")])
    try:
        data = _File.model_validate(raw)
    except ValidationError as err:
        raise KnowledgeError([_diagnostic(smap, e) for e in err.errors()]) from None
    problems = _cross_check(raw, data, smap)
    if problems:
        raise KnowledgeError(problems)
    return _compile(data)


def default_mappings() -> FhirMappings:
    """The project's mappings, loaded once per process."""
    return _DEFAULT.get(DEFAULT_PATH, lambda: load_mappings(DEFAULT_PATH))


_DEFAULT: Memo[FhirMappings] = Memo(1)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(DEFAULT_PATH.parents[1]))
    except ValueError:
        return str(path)


def _diagnostic(smap: SourceMap, error: Mapping[str, Any]) -> Diagnostic:
    loc = tuple(error["loc"])
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    if error["type"] == "extra_forbidden":
        message = f"unknown field '{loc[-1]}'"
    elif error["type"] == "missing":
        message = f"required field '{loc[-1]}' is missing"
    else:
        message = error["msg"].removeprefix("Value error, ")
    return smap.diag(loc, f"{where}: {message}")


def _cross_check(raw: dict, data: _File, smap: SourceMap) -> list[Diagnostic]:
    """Every `source` names a defined source; every gene named elsewhere is listed under `genes`."""
    problems: list[Diagnostic] = []

    def walk(node: Any, path: tuple) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "source" and path and path[0] != "sources" and value not in data.sources:
                    problems.append(smap.diag(path + (key,), f"source '{value}' is not defined under `sources`"))
                walk(value, path + (key,))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, path + (i,))

    walk(raw, ())
    for i, gene in enumerate(data.allele_status_genes.genes):
        if gene not in data.genes:
            problems.append(smap.diag(("allele_status_genes", "genes", i),
                                      f"gene '{gene}' is not listed under `genes`"))
    for i, spelling in enumerate(data.allele_spellings):
        for j, gene in enumerate(spelling.genes):
            if gene not in data.genes:
                problems.append(smap.diag(("allele_spellings", i, "genes", j),
                                          f"gene '{gene}' is not listed under `genes`"))
    for i, lab in enumerate(data.lab_codes):
        if lab.gene not in data.genes:
            problems.append(smap.diag(("lab_codes", i, "gene"), f"gene '{lab.gene}' is not listed under `genes`"))
        if lab.states == "allele-status" and not lab.allele:
            problems.append(smap.diag(("lab_codes", i), "states: allele-status needs `allele`"))
    terms = {fold(t) for t in data.phenotype_terms.terms}
    for i, answer in enumerate(data.phenotype_answers):
        if answer.phenotype is not None and fold(answer.phenotype) not in terms:
            problems.append(smap.diag(("phenotype_answers", i, "phenotype"),
                                      f"'{answer.phenotype}' is not one of `phenotype_terms`"))
    for i, synonym in enumerate(data.phenotype_synonyms):
        if fold(synonym.phenotype) not in terms:
            problems.append(smap.diag(("phenotype_synonyms", i, "phenotype"),
                                      f"'{synonym.phenotype}' is not one of `phenotype_terms`"))
    seen: dict[tuple[str, str], int] = {}
    for i, lab in enumerate(data.lab_codes):
        key = (lab.system, lab.code)
        if key in seen:
            problems.append(smap.diag(("lab_codes", i), f"code {lab.system}|{lab.code} is listed twice"))
        seen[key] = i
    for i, code in enumerate(data.text_coded_results):
        if (code.system, code.code) in seen:
            problems.append(smap.diag(("text_coded_results", i),
                                      f"code {code.system}|{code.code} is already under lab_codes with its gene"))
    return problems


def _compile(data: _File) -> FhirMappings:
    by_number = {}
    for symbol, gene in data.genes.items():
        if gene.hgnc:
            by_number[gene.hgnc.removeprefix("HGNC:")] = symbol
    phenotype_by_text = {fold(t): t for t in data.phenotype_terms.terms}
    for synonym in data.phenotype_synonyms:
        phenotype_by_text[fold(synonym.text)] = phenotype_by_text[fold(synonym.phenotype)]
    spellings: dict[str, list[tuple[re.Pattern, str]]] = {}
    for spelling in data.allele_spellings:
        for symbol in spelling.genes:
            spellings.setdefault(symbol, []).append((re.compile(spelling.pattern), spelling.replacement))
    symbols = sorted(data.genes, key=len, reverse=True)  # longest first: HLA-DRB1 before HLA-D…
    pattern = re.compile(r"(?<![A-Za-z0-9-])(" + "|".join(map(re.escape, symbols)) + r")(?![A-Za-z0-9])", re.I)
    return FhirMappings(
        genes=frozenset(data.genes),
        gene_by_hgnc_number=by_number,
        gene_by_folded_symbol={s.casefold(): s for s in data.genes},
        allele_status_genes=frozenset(data.allele_status_genes.genes),
        gene_code_systems=frozenset(s.system for s in data.gene_code_systems),
        gene_studied_components=frozenset((c.system, c.code) for c in data.gene_studied_components),
        gene_extensions=frozenset(e.url for e in data.gene_extensions),
        observation_kinds={(c.system, c.code): c.kind for c in data.observation_kinds},
        phenotype_components=frozenset((c.system, c.code) for c in data.phenotype_components),
        medication_components=frozenset((c.system, c.code) for c in data.medication_components),
        phenotype_answers={(a.system, a.code): a.phenotype for a in data.phenotype_answers},
        phenotype_by_text=phenotype_by_text,
        phenotype_terms=frozenset(data.phenotype_terms.terms),
        # longest first, so "not detected" wins over "detected"
        present_words=tuple(sorted((fold(w) for w in data.allele_presence.present_words), key=len, reverse=True)),
        absent_words=tuple(sorted((fold(w) for w in data.allele_presence.absent_words), key=len, reverse=True)),
        presence_answers={(a.system, a.code): a.present for a in data.allele_presence.answers},
        zygosity_components=frozenset((c.system, c.code) for c in data.zygosity_components),
        zygosity_answers={(a.system, a.code): a.zygosity for a in data.zygosity_answers},
        allele_name_systems=frozenset(s.system for s in data.allele_name_systems),
        gl_string_systems=frozenset(s.system for s in data.gl_string_systems),
        allele_spellings={g: tuple(v) for g, v in spellings.items()},
        suballele_to_core=data.pharmvar_suballele_to_core.enabled,
        lab_codes={(c.system, c.code): LabCode(c.gene, c.states, c.allele) for c in data.lab_codes},
        text_coded_results=tuple((c.system, c.code) for c in data.text_coded_results),
        genomic_report_categories=tuple((c.system, c.code) for c in data.genomic_report_categories),
        genomic_report_codes=tuple((c.system, c.code) for c in data.genomic_report_codes),
        rxnorm_systems=frozenset(s.system for s in data.rxnorm_systems),
        atc_systems=frozenset(s.system for s in data.atc_systems),
        snomed_systems=frozenset(s.system for s in data.snomed_systems),
        gene_symbol_pattern=pattern,
    )
