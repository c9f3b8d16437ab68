"""Read a single-variant genotype as laboratories write it, on the strand the spelling names.

VKORC1 rs9923231 is written at least two ways round: by its rsID with the bases of the genomic
reference's forward strand (`rs9923231 C/T`, `rs9923231 TT`; CPIC's allele names "rs9923231 reference
(C)" / "variant (T)"), and by its legacy position on the gene's own strand, which runs the other way
(`-1639 G/A`, `-1639GA`, `c.-1639G>A heterozygous`, `3673 AA`). Read on the wrong strand, a C/C patient
becomes A/A and gets a third of the dose. So each spelling is read only on its own strand:

- an rsID takes bases of either strand, since the two strands' bases are disjoint here (C/T against
  G/A) and a letter says which strand it is on; a pair mixing strands (`C/A`) is refused;
- a gene-strand name (`-1639`, `c.-1639`, `3673`) takes gene-strand bases only (`-1639 C/T` is refused:
  the name and the bases disagree about the strand);
- zygosity words count the named change: `heterozygous` one variant allele, `homozygous` two (or none
  with "reference"/"wild type"), and they need the change or the word "variant" to be named.

The result is the number of variant alleles (0, 1, 2), or a reason the text cannot be read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cds.knowledge.models import SingleVariant


class NotThisVariant(ValueError):
    """The text is not a genotype of this variant, or cannot be read without guessing."""


_BASE_PAIR = re.compile(r"^([ACGT])\s*(?:/|\||,|\s)?\s*([ACGT])$", re.I)
_CHANGE = re.compile(r"^([ACGT])\s*>\s*([ACGT])\s*(.*)$", re.I)
_HET = re.compile(r"^(?:heterozygous|heterozygote|het)$", re.I)
_HOM = re.compile(r"^(?:homozygous|homozygote|hom)"
                  r"(?:\s+(?:for\s+the\s+)?(variant|alternate|mutant|alt|reference|ref|wild[- ]?type))?$", re.I)


@dataclass(frozen=True)
class Spelling:
    strand: str          # "genomic", "gene" or "either"
    rest: str            # what follows the variant's name


def variant_count(text: str, variant: SingleVariant) -> int:
    """How many variant alleles `text` states, read on the strand it names; NotThisVariant otherwise."""
    spelling = _name_of(text.strip(), variant)
    rest = spelling.rest.strip().strip(":=").strip()
    if not rest:
        raise NotThisVariant(f"'{text}' names {variant.rsid} but no genotype")
    change = _CHANGE.match(rest)
    if change:
        return _count_from_change(text, change, spelling.strand, variant)
    pair = _BASE_PAIR.match(rest)
    if pair:
        return _count_from_bases(text, (pair.group(1).upper(), pair.group(2).upper()), spelling.strand, variant)
    zygosity = _zygosity(rest)
    if zygosity is not None:
        if zygosity == "variant-named-needed":
            raise NotThisVariant(f"'{text}': 'homozygous' without saying for which allele (the change, 'variant' or "
                                 "'reference')")
        return int(zygosity)
    raise NotThisVariant(f"'{text}' is not a {variant.rsid} genotype this reader knows")


def _name_of(text: str, variant: SingleVariant) -> Spelling:
    lowered = text.lower()
    if lowered.startswith(variant.rsid.lower()):
        return Spelling("either", text[len(variant.rsid):])
    for name in sorted(variant.names, key=len, reverse=True):   # 'c.-1639' before '-1639'
        if lowered.startswith(name.lower()):
            rest = text[len(name):]
            if rest[:1].isdigit():
                break       # '-16390' is another position
            return Spelling("gene", rest)
    raise NotThisVariant(f"'{text}' does not name {variant.rsid} ({', '.join([variant.rsid, *variant.names])})")


def _strand_of(bases: tuple[str, ...], strand: str, variant: SingleVariant) -> str:
    genomic = {variant.genomic.reference, variant.genomic.variant}
    gene = {variant.gene_strand.reference, variant.gene_strand.variant}
    on = [name for name, allowed in (("genomic", genomic), ("gene", gene)) if set(bases) <= allowed]
    if strand == "gene":
        on = [s for s in on if s == "gene"]
    if len(on) != 1:
        where = ("the gene strand names it (" + "/".join(sorted(gene)) + ")") if strand == "gene" else \
            (f"its bases are {'/'.join(sorted(genomic))} on the genomic reference, "
             f"{'/'.join(sorted(gene))} on the gene strand")
        raise NotThisVariant(f"bases {'/'.join(bases)} are not a {variant.rsid} genotype on one strand: {where}")
    return on[0]


def _count_from_bases(text: str, bases: tuple[str, str], strand: str, variant: SingleVariant) -> int:
    on = _strand_of(bases, strand, variant)
    alt = variant.genomic.variant if on == "genomic" else variant.gene_strand.variant
    return sum(1 for b in bases if b == alt)


def _count_from_change(text: str, change: re.Match, strand: str, variant: SingleVariant) -> int:
    ref, alt, rest = change.group(1).upper(), change.group(2).upper(), change.group(3).strip()
    on = _strand_of((ref, alt), strand, variant)
    bases = variant.genomic if on == "genomic" else variant.gene_strand
    if (ref, alt) != (bases.reference, bases.variant):
        raise NotThisVariant(f"'{text}': {ref}>{alt} is not the {variant.rsid} change "
                             f"({bases.reference}>{bases.variant} on this strand)")
    zygosity = _zygosity(rest) if rest else None
    if zygosity is None:
        raise NotThisVariant(f"'{text}' names the change but not the zygosity (heterozygous or homozygous)")
    return 2 if zygosity == "variant-named-needed" else int(zygosity)


def _zygosity(words: str) -> str | None:
    """'1' heterozygous, '2' homozygous variant, '0' homozygous reference; 'variant-named-needed' for a
    bare 'homozygous' (the caller decides whether the change was named); None: no zygosity words."""
    words = " ".join(words.replace("(", " ").replace(")", " ").split())
    if _HET.match(words):
        return "1"
    hom = _HOM.match(words)
    if hom:
        which = (hom.group(1) or "").lower().replace("-", "").replace(" ", "")
        if not which:
            return "variant-named-needed"
        return "0" if which in ("reference", "ref", "wildtype") else "2"
    if words.lower() in ("wild type", "wild-type", "wildtype", "reference", "ref"):
        return "0"
    return None
