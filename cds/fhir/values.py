"""Read the value of a genomic result as the lab wrote it: a diplotype, one allele, an HLA allele and
its presence, or a phenotype term. Light normalisation only: the gene symbol in front of each allele
goes ("CYP2C19*1/CYP2C19*2", "CYP2D6 *1/*41", "CYP2D6_*1/*1" → "*1/*2", "*1/*41", "*1/*1"), a PharmVar
suballele becomes its core allele when the mappings say so, and a phenotype becomes CPIC's spelling.

The readers of alleles and diplotypes return a `Parsed`: the value, or the reason it could not be read.
Reasons name genes and fields, never the value.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from cds.fhir.mappings import FhirMappings, fold
from cds.genotype import hla_allele, phenotype_spelling


@dataclass(frozen=True, slots=True)
class Parsed:
    """A value read from a lab's text (`value`), or why it could not be (`problem`); exactly one is set."""

    value: str | None = None
    problem: str | None = None


def _failed(problem: str) -> Parsed:
    return Parsed(None, problem)


_SUBALLELE = re.compile(r"^(\*\d+)\.\d{3}$")
_SEPARATOR = re.compile(r"^[\s_]*")


def _strip_symbol(part: str, gene: str, m: FhirMappings) -> tuple[str, str | None]:
    """Remove `gene` (or, for HLA, its locus letter) written before an allele. Another gene's symbol
    there is an error: the value would be about a different gene."""
    found = m.gene_symbol_pattern.match(part)
    if found and found.start() == 0:
        symbol = m.gene_by_folded_symbol[found.group(1).casefold()]
        rest = part[found.end():]
        if rest and rest[0] not in "*_ \t":
            return part, None               # e.g. "HLA-A:01:01G": not a prefix we understand
        if symbol != gene:
            return part, f"names {symbol}, not {gene}"
        return _SEPARATOR.sub("", rest), None
    if gene in m.allele_status_genes:
        locus = gene.removeprefix("HLA-")
        if part.upper().startswith(locus.upper() + "*"):
            return part[len(locus):], None
    return part, None


def respell(allele: str, gene: str, m: FhirMappings) -> str:
    """A laboratory's spelling of an allele in CPIC's ('HLA-B' '5701' → '*57:01', MT-RNR1 '1555A>G' →
    'm.1555A>G'), by the cited `allele_spellings` of the mappings; anything else unchanged."""
    for pattern, replacement in m.allele_spellings.get(gene, ()):
        if pattern.fullmatch(allele):
            return pattern.sub(replacement, allele)
    return allele


def has_spelling(text: str, gene: str, m: FhirMappings) -> bool:
    stripped, problem = _strip_symbol(" ".join(text.split()), gene, m)
    return not problem and any(p.fullmatch(stripped.strip()) for p, _ in m.allele_spellings.get(gene, ()))


def _allele(part: str, gene: str, m: FhirMappings) -> Parsed:
    text, problem = _strip_symbol(part.strip(), gene, m)
    if problem:
        return _failed(problem)
    text = respell(text.strip(), gene, m)
    if not text:
        return _failed("an allele is empty")
    if gene in m.allele_status_genes:
        # the decision core's one reading of HLA names (cds.genotype.hla_allele), as every face reads them
        name, problem = hla_allele(text, gene)
        return Parsed(name) if name else _failed(f"an allele {problem}")
    # Another gene's symbol inside is not an allele name; the gene's own may be (CPIC's CFTR allele
    # "ivacaftor non-responsive CFTR sequence", as PharmCAT writes it)
    named = {m.gene_by_folded_symbol[f.group(1).casefold()] for f in m.gene_symbol_pattern.finditer(text)}
    if named - {gene} or '"' in text:
        return _failed("an allele is not an allele name")
    if m.suballele_to_core:
        text = _SUBALLELE.sub(r"\1", text)
    return Parsed(text)


def _joined(parts: list[str], gene: str, m: FhirMappings, said: str = "") -> Parsed:
    """The alleles of `parts` joined by '/', or the first allele's problem (after `said`)."""
    out: list[str] = []
    for part in parts:
        allele = _allele(part, gene, m)
        if allele.value is None:
            return _failed(f"{said}{allele.problem}")
        out.append(allele.value)
    return Parsed("/".join(out))


def diplotype(text: str, gene: str, m: FhirMappings) -> Parsed:
    """'CYP2C19*1/CYP2C19*2' → '*1/*2' (order kept). One allele without '/' is returned alone (the
    interpreter decides whether the gene is read from one allele)."""
    return _joined(" ".join(text.split()).split("/"), gene, m)


def gl_string(code: str, gene: str, m: FhirMappings) -> Parsed:
    """A GL String coding ('hla#3.31.0#HLA-A*03:01:01:01+HLA-A*30:01:01') → '*03:01:01:01/*30:01:01'.
    Only the unambiguous genotype form 'A+B' is read."""
    gl = code.rsplit("#", 1)[-1]
    if any(op in gl for op in "/|^~"):
        return _failed("GL string is ambiguous (contains / | ^ or ~)")
    parts = gl.split("+")
    if len(parts) != 2:
        return _failed("GL string is not two alleles joined by '+'")
    return _joined(parts, gene, m, "GL string: ")


def single_allele(text: str, gene: str, m: FhirMappings) -> Parsed:
    """One haplotype/allele: 'CYP2D6*7.001' → '*7', 'HLA-B*35:01' or 'B*35:01' → '*35:01'."""
    if "/" in text:
        return _failed("a haplotype value names more than one allele")
    return _allele(" ".join(text.split()), gene, m)


def presence_word(text: str, m: FhirMappings) -> tuple[str, bool] | None:
    """Split 'HLA-B*57:01 positive' into ('HLA-B*57:01', True); 'Not detected' into ('', False)."""
    folded = fold(text)
    for words, present in ((m.absent_words, False), (m.present_words, True)):
        for word in words:   # longest first, so "not detected" is tried before "detected"
            if folded == word:
                return "", present
            if folded.endswith(" " + word):
                return " ".join(text.split())[: len(folded) - len(word)].strip(" :-"), present
    return None


_STATED = re.compile(r"^(?P<value>.*?\S)\s*\((?P<stated>[^()]+)\)\s*$")


def split_stated_phenotype(text: str, gene: str, m: FhirMappings) -> tuple[str, str | None]:
    """'*2/*3 (Poor Metabolizer)' → ('*2/*3', 'Poor Metabolizer'): a lab's diplotype with the phenotype
    it states in parentheses. Parentheses holding anything but a phenotype term (CPIC's own allele
    names such as 'c.1905+1G>A (*2A)') are left where they are."""
    found = _STATED.match(" ".join(text.split()))
    if found:
        term = phenotype_term(found.group("stated"), gene, m)
        if term:
            return found.group("value"), term
    return text, None


def phenotype_term(text: str, gene: str | None, m: FhirMappings) -> str | None:
    """CPIC's spelling of a phenotype written as text, optionally after the gene symbol."""
    folded = fold(text)
    found = m.phenotype_by_text.get(folded)
    if found:
        return found
    if gene and folded.startswith(gene.casefold()):
        text = " ".join(text.split())[len(gene):].lstrip(" :-")
        found = m.phenotype_by_text.get(fold(text))
        if found:
            return found
    # the decision core's reading of lab and PharmCAT spellings ("PM", "Metaboliser", "… (UM)"), as every face's
    return phenotype_spelling(text, m.phenotype_terms)


def same_diplotype(a: str, b: str) -> bool:
    """Equal after normalising allele order ('*2/*1' == '*1/*2')."""
    return sorted(a.split("/")) == sorted(b.split("/"))
