"""PharmCAT's gene calls as plain data: what PharmCAT (or the lab, in an outside-call file) said per gene.

Nothing here interprets a call in CPIC's terms (cds/pharmcat/interpret.py does, with the gene tables);
these are PharmCAT's own words, kept as written, so a face can show them and a test can compare them
with PharmCAT's files.
"""
from __future__ import annotations

from dataclasses import dataclass

MATCHER = "MATCHER"     # PharmCAT's Named Allele Matcher called it from the VCF
OUTSIDE = "OUTSIDE"     # another tool called it and handed it to PharmCAT (outside-call file)
NONE = "NONE"           # no call

CALLED = "called"
NO_RESULT = "no result"
INDETERMINATE = "indeterminate"

PHENOTYPE_JSON = "phenotype.json"
REPORT_JSON = "report.json"
OUTSIDE_CALL_TSV = "outside-call TSV"


@dataclass(frozen=True)
class CalledDiplotype:
    """One diplotype PharmCAT looks recommendations up with (a `recommendationDiplotypes` entry), or the
    one an outside-call line states."""

    text: str | None                           # allele names joined by "/" ("*1/*3"; one when haploid);
                                               # None: an outside call stating a phenotype or score only
    label: str | None = None                   # PharmCAT's label as shown in its report
    phenotypes: tuple[str, ...] = ()           # PharmCAT's phenotypes ("Intermediate Metabolizer", "*57:01 positive")
    activity_score: str | None = None          # "1.0"; None where the gene has none
    lookup_keys: tuple[str, ...] = ()          # PharmCAT's lookup keys ("1.0", "No Result", "n/a")
    combination: bool = False                  # a combination call ("[*2 + *3]")
    functions: tuple[str, ...] = ()            # each allele's function, as PharmCAT gives it


@dataclass(frozen=True)
class GeneCall:
    """PharmCAT's call for one gene."""

    gene: str
    call_source: str                           # MATCHER | OUTSIDE | NONE
    status: str                                # CALLED | NO_RESULT | INDETERMINATE
    diplotypes: tuple[CalledDiplotype, ...]    # what PharmCAT looks recommendations up with (several: ambiguous)
    reason: str | None = None                  # why no result or Indeterminate, in PharmCAT's terms
    messages: tuple[str, ...] = ()             # PharmCAT's messages for the gene
    shown: str | None = None                   # the call as PharmCAT's report shows it (source diplotypes)
    phenotype_version: str | None = None       # PharmCAT's data version for the phenotype
    allele_definition_version: str | None = None
    line: int | None = None                    # outside-call files: the line it was read from

    @property
    def diplotype(self) -> str | None:
        """The one diplotype of a call, or the candidates joined as PharmCAT's outside calls write them."""
        texts = [d.text for d in self.diplotypes if d.text]
        return " or ".join(texts) if texts else None


@dataclass(frozen=True)
class PharmcatResults:
    """One file's calls, with what produced them."""

    kind: str                                  # PHENOTYPE_JSON | REPORT_JSON | OUTSIDE_CALL_TSV
    calls: tuple[GeneCall, ...]
    pharmcat_version: str | None = None        # "v3.1.0-2-g0b250f81" (report.json only)
    data_version: str | None = None            # "2025-11-05-00-25"
    matcher_version: str | None = None         # the Named Allele Matcher's version (phenotype/report JSON)
    timestamp: str | None = None               # when PharmCAT wrote the file (ISO 8601)

    def call(self, gene: str) -> GeneCall | None:
        return next((c for c in self.calls if c.gene == gene), None)

    @property
    def method(self) -> str:
        """How the calls were made, in words: the tool and data versions, for a FHIR Observation.method."""
        if self.kind == OUTSIDE_CALL_TSV:
            return "Outside calls in PharmCAT's outside-call format (not called by PharmCAT)"
        tool = f"PharmCAT {self.pharmcat_version}" if self.pharmcat_version else "PharmCAT"
        if self.matcher_version and not self.pharmcat_version:
            tool += f" (Named Allele Matcher {self.matcher_version})"
        return f"{tool}, data version {self.data_version}" if self.data_version else tool
