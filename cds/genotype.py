"""Interpret a gene result in CPIC's terms: diplotype → allele functions → phenotype, activity score
and the lookup key that guideline recommendations are keyed by.

The rules come from the gene tables in guidelines/genes (see cds/knowledge/models.py: GeneTable).
Whatever the table cannot decide is "Indeterminate" with a reason, never a guess: an allele the table
does not know, an allele CPIC assigns no function, a function pair with no CPIC rule.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING

from cds.errors import CdsError
from cds.memo import Memo
from cds.snv import NotThisVariant, variant_count

if TYPE_CHECKING:
    from cds.knowledge.models import GeneTable

INDETERMINATE = "Indeterminate"
SCORE_NA = "n/a"
_SCORE = re.compile(r"^\s*(≥|>=)?\s*(\d+(?:\.\d+)?)\s*$")


def parse_score(text: str | None) -> tuple[Decimal, bool] | None:
    """'1.5' → (1.5, False); '≥3.0' → (3.0, True); 'n/a' or junk → None."""
    if text is None:
        return None
    m = _SCORE.match(str(text))
    if not m:
        return None
    return Decimal(m.group(2)), bool(m.group(1))


def format_score(value: Decimal, at_least: bool = False) -> str:
    """CPIC's spelling of an activity score: one decimal at least, two when needed ('1.0', '1.25')."""
    text = f"{value:.2f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return ("≥" if at_least else "") + text


@dataclass(frozen=True)
class Interpretation:
    """A gene result in CPIC terms. `lookup` maps engine attributes to lookup values: the gene itself
    for most genes (`{"CYP2C19": "Poor Metabolizer"}`), one attribute per allele of interest for
    allele-status genes (`{"HLA-B *57:01": "*57:01 positive"}`)."""

    gene: str
    phenotype: str
    lookup: dict[str, str]
    diplotype: str | None = None
    activity_score: str | None = None
    reason: str | None = None                      # why the result is Indeterminate
    source_ids: tuple[str, ...] = ()
    stated_as: str = "diplotype"                   # diplotype | phenotype | activity score | allele status
    # True: the result is not one CPIC's tables define (an allele the table does not know, a function
    # pair CPIC has no rule for, a score no CPIC key covers): `reason` says why, and no advice rests on
    # it. False for CPIC's own Indeterminate and "n/a" (an uncertain-function allele, an allele without
    # an activity value): CPIC keys recommendations by those, so they go through the engine as any key.
    unreadable: bool = False
    # A diplotype's two alleles as the gene table names them (a diplotype statement read through the
    # table; else empty): what a guideline keyed by genotype (DPWG: CYP2C9 *1/*3) is matched on.
    alleles: tuple[str, ...] = ()

    @property
    def indeterminate(self) -> bool:
        return self.phenotype == INDETERMINATE

    @property
    def lookup_key(self) -> str:
        """The single CPIC lookup value, or several joined for allele-status genes."""
        return "; ".join(self.lookup.values())


def allele_attribute(gene: str, allele: str) -> str:
    """Engine attribute name for one allele of interest of an allele-status gene."""
    return f"{gene} {allele}"


def attribute_gene(attribute: str) -> str:
    """The gene of an engine attribute: the attribute itself, or the gene of an allele_attribute or a
    genotype_attribute."""
    return attribute.split(" ", 1)[0]


GENOTYPE = "genotype"
OTHER_GENOTYPE = "other"   # a genotype attribute's value when the patient's is none the drug's keys name


def genotype_attribute(gene: str) -> str:
    """Engine attribute for a gene's genotype, for recommendations keyed by genotype (DPWG's allele
    counts: CYP2C9 {'*1': 1, '*3': 1}, UGT1A1 {'*28': 2})."""
    return f"{gene} {GENOTYPE}"


def genotype_key(alleles) -> str:
    """A genotype as one text whatever order the alleles come in: '*3/*1' and '*1/*3' → '*1/*3'."""
    return "/".join(sorted(alleles, key=_natural))


def _natural(name: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


_REMEMBERED_DIPLOTYPES = 50_000   # per gene: the diplotypes CPIC's tables allow are a few thousand


class GeneInterpreter:
    """The compiled form of one gene table; built once at start-up."""

    def __init__(self, table: GeneTable):
        self.gene = table.gene
        self.kind = table.kind
        self._alleles = {name: a for name, a in table.alleles.items()}
        self._alleles_folded = _allele_index(table.alleles)
        # names CPIC's change log renamed or folded into another allele (each alias cites its row)
        for name, alias in table.aliases.items():
            self._alleles_folded.setdefault(_fold(name), alias.allele)
        self._pair_rules = {tuple(sorted(r.functions)): r.phenotype for r in table.phenotype_rules}
        self._exceptions = {}
        for diplotype, phenotype in table.diplotype_exceptions.items():
            self._exceptions[diplotype] = phenotype
        self._ranges = [(Decimal(str(r.min)), None if r.max is None else Decimal(str(r.max)), r.phenotype)
                        for r in table.score_ranges]
        self.alleles_of_interest = list(table.alleles_of_interest)
        self._variant = table.variant
        # genotype genes: each pair of table alleles in table order → the name guidelines key it by
        self._genotype_names = {_ordered_pair(p.split("/"), list(table.alleles)): n for p,
                                n in table.genotype_names.items()}
        phenotypes = set(self._pair_rules.values()) | set(self._exceptions.values()) | {r[2] for r in self._ranges}
        phenotypes |= set(self._genotype_names.values())
        self.phenotypes = sorted(phenotypes)
        self._phenotypes_folded = {p.casefold(): p for p in phenotypes | {INDETERMINATE}}
        # A gene symbol written before an allele ("CYP2C19*2", "CYP2D6 *41", "CYP2D6_*1", "DPYD c.1905+1G>A"),
        # only at the start of an allele: some allele names contain the symbol ("... CFTR sequence").
        self._prefix = re.compile(r"(?i)(?:^|(?<=/))\s*" + re.escape(self.gene) + r"(?:\s+|_|(?=\*))")
        # A diplotype's interpretation depends on its text alone (and this table): each text is read
        # once, and a patient's result takes it with its own source ids. Bounded.
        self._by_diplotype: Memo[Interpretation] = Memo(_REMEMBERED_DIPLOTYPES)

    # --- what the table can produce -------------------------------------------------------------

    def lookup_values(self) -> dict[str, set[str]]:
        """Every lookup value this gene can produce, per engine attribute (validation uses this)."""
        if self.kind == "allele-status":
            return {allele_attribute(self.gene, a): {f"{a} positive", f"{a} negative"}
                    for a in self.alleles_of_interest}
        if self.kind == "activity-score":
            return {self.gene: self.possible_scores() | {SCORE_NA}}
        if self.kind == "genotype" and not self._genotype_names:
            names = list(self._alleles)
            return {self.gene: {_ordered_pair([a, b], names) for a in names for b in names} | {INDETERMINATE}}
        return {self.gene: set(self.phenotypes) | {INDETERMINATE}}

    def possible_scores(self) -> set[str]:
        """All activity scores two alleles of this table can sum to (CPIC keys recommendations by these)."""
        return set(self._possible_scores)

    @cached_property
    def _possible_scores(self) -> frozenset[str]:
        values = {v for v in (parse_score(a.activity) for a in self._alleles.values()) if v is not None}
        out = set()
        for v1, g1 in values:
            for v2, g2 in values:
                out.add(format_score(v1 + v2, g1 or g2))
        return frozenset(out)

    def score_key(self, value: Decimal, at_least: bool = False) -> str | None:
        """CPIC's lookup key for a stated activity score, or None when no key covers it.

        A score two alleles of the table sum to is its own key. CPIC keys scores it cannot bound from
        above (an allele such as CYP2D6 *1x≥3, activity "≥3.0") as "≥X"; a stated score that is no
        exact key (e.g. CYP2D6 3.5 or 5.0: CPIC's exact keys stop at 4.0) is covered by every "≥X" key
        with X at most the score, and reaches the tightest of them, the one CPIC's own diplotype table
        gives the same sum (*1x≥3/*9x2 = ≥3.5, so 3.5 → "≥3.5"; 5.5 → "≥5.0"). A score below every
        "≥X" key that is not an exact key (e.g. 2.6, or 0.25 for DPYD) is no sum of CPIC's allele
        values: no key, and the caller says so (Indeterminate)."""
        score = format_score(value, at_least)
        if score in self._possible_scores:
            return score
        covering = [(parsed[0], key) for key in self._possible_scores
                    if (parsed := parse_score(key)) is not None and parsed[1] and parsed[0] <= value]
        return max(covering)[1] if covering else None

    def phenotype_for_score(self, score: str) -> str:
        parsed = parse_score(score)
        if parsed is None:
            return INDETERMINATE
        value, _ = parsed
        for low, high, phenotype in self._ranges:
            if value >= low and (high is None or value <= high):
                return phenotype
        return INDETERMINATE

    def phenotype_of_key(self, key: str) -> str:
        """The phenotype a lookup value stands for ('1.5' → 'Normal Metabolizer' for CYP2D6; a genotype
        key '*1/*3' → the phenotype of that diplotype)."""
        if self.kind == "activity-score" and parse_score(key) is not None:
            return self.phenotype_for_score(key)
        if self.kind == "activity-score" and key == SCORE_NA:
            return INDETERMINATE
        if self.genotype_of_key(key) is not None:
            return self.from_diplotype(key).phenotype
        return key

    def genotype_of_key(self, value: str) -> str | None:
        """A lookup value that names a genotype of two alleles of this table ('*1/*3', '*80+*28/*80+*28'),
        as genotype_key spells it; None for anything else (a phenotype, a score, an allele status)."""
        if self.kind == "allele-status" or value in self._phenotypes_folded.values():
            return None
        options, problem = self._split(value.strip())
        alleles = [o[0] for o in options if len(o) == 1]
        if problem or len(alleles) != 2 or len(options) != 2 or not set(alleles) <= set(value.strip().split("/")):
            return None    # a key names the table's alleles as they are (no alias, suballele or copy bin)
        return genotype_key(alleles)

    def scores_for_phenotype(self, phenotype: str) -> set[str]:
        return {s for s in self.possible_scores() if self.phenotype_for_score(s) == phenotype}

    # --- interpretation ---------------------------------------------------------------------------

    def from_diplotype(self, text: str, source_ids: tuple[str, ...] = ()) -> Interpretation:
        found = self._by_diplotype.get(text, lambda: self._read_diplotype(text, ()))
        return replace(found, source_ids=source_ids) if source_ids else found

    def _read_diplotype(self, text: str, source_ids: tuple[str, ...]) -> Interpretation:
        if self.kind == "allele-status":
            return self._hla_from_typing(text, source_ids)
        if self.kind == "genotype":
            return self._genotype(text, source_ids)
        cleaned = self._prefix.sub("", text.strip()).strip()
        if "[" in cleaned:
            # PharmCAT's combination call ('[*2 + *3]/*1'): variants of several alleles seen together whose
            # arrangement the caller could not resolve; no CPIC allele, so no CPIC key, and no guess
            return self._indeterminate(cleaned, "a combination call ([… + …]: alleles found together whose "
                                       "arrangement was not resolved) names no CPIC allele", source_ids)
        options, problem = self._split(cleaned)
        shown = "/".join(o[0] if len(o) == 1 else self._unresolved_name(o) for o in options) if options else cleaned
        if problem:
            return self._indeterminate(shown, problem, source_ids)
        readings = [self._read_alleles(list(alleles), source_ids) for alleles in itertools.product(*options)]
        if len(readings) == 1:
            return readings[0]
        return self._one_of(readings, shown, source_ids)

    def _read_alleles(self, alleles: list[str], source_ids) -> Interpretation:
        shown = "/".join(alleles)
        exception = self._exceptions.get(shown) or (len(alleles) == 2
                                                    and self._exceptions.get(f"{alleles[1]}/{alleles[0]}"))
        if self.kind == "activity-score":
            return self._from_activity(alleles, shown, source_ids, exception)
        assigned = [self._alleles[a].function for a in alleles]
        functions = [f for f in assigned if f is not None]
        if exception:
            phenotype = exception
        elif len(functions) < len(assigned):
            missing = [a for a, f in zip(alleles, assigned, strict=True) if f is None]
            return self._indeterminate(shown, f"CPIC assigns no function to {', '.join(missing)}", source_ids)
        else:
            found = self._pair_rules.get(tuple(sorted(functions)))
            if found is None:
                return self._indeterminate(shown, f"no CPIC phenotype rule for {' + '.join(functions)}", source_ids)
            phenotype = found
            if phenotype == INDETERMINATE:  # CPIC's own rule: say which pair, so the answer is never bare
                return self._indeterminate(shown, f"CPIC reads {' + '.join(functions)} as Indeterminate", source_ids,
                                           unreadable=False)
        return Interpretation(self.gene, phenotype, {self.gene: phenotype}, diplotype=shown, source_ids=source_ids,
                              alleles=tuple(alleles) if len(alleles) == 2 else ())

    @staticmethod
    def _unresolved_name(candidates: tuple[str, ...]) -> str:
        """'*2xN' for the candidates *2x2, *2x≥3 (the copy number not stated)."""
        return candidates[0].rsplit("x", 1)[0] + "xN"

    def _one_of(self, readings: list[Interpretation], shown: str, source_ids) -> Interpretation:
        """A diplotype that stands for several of the table's (a copy number not stated: '*2xN'): its reading
        when all agree on the CPIC key; its phenotype, as a phenotype-only result, when they agree on that
        (CPIC's advice for each of its scores, the score deciding); else no CPIC key, with the reason."""
        listed = "; ".join(f"{r.diplotype} is {r.phenotype} ({r.lookup_key})" for r in readings)
        if any(r.unreadable for r in readings) or len({r.phenotype for r in readings}) > 1:
            return self._indeterminate(shown, f"the copy number is not stated and CPIC's readings differ: {listed}; "
                                       "ask the laboratory for the copy number", source_ids)
        first = readings[0]
        if len({r.lookup_key for r in readings}) == 1:
            return replace(first, diplotype=shown, alleles=())
        return Interpretation(self.gene, first.phenotype, {self.gene: first.phenotype}, diplotype=shown,
                              source_ids=source_ids, stated_as="phenotype",
                              reason=f"the copy number is not stated: {listed}")

    def _from_activity(self, alleles: list[str], shown: str, source_ids, exception) -> Interpretation:
        total, at_least = Decimal(0), False
        for a in alleles:
            parsed = parse_score(self._alleles[a].activity)
            if parsed is None:
                return Interpretation(self.gene, INDETERMINATE, {self.gene: SCORE_NA}, diplotype=shown,
                                      activity_score=SCORE_NA, source_ids=source_ids,
                                      reason=f"{a} has no CPIC activity value",
                                      alleles=tuple(alleles) if len(alleles) == 2 else ())
            total += parsed[0]
            at_least = at_least or parsed[1]
        if len(alleles) != 2:
            return self._indeterminate(shown, "an activity score needs two alleles", source_ids)
        score = format_score(total, at_least)
        phenotype = exception or self.phenotype_for_score(score)
        key = score if phenotype != INDETERMINATE else SCORE_NA
        outside = phenotype == INDETERMINATE and not exception   # a sum in no CPIC range: no CPIC key covers it
        return Interpretation(self.gene, phenotype, {self.gene: key}, diplotype=shown, activity_score=score,
                              source_ids=source_ids, unreadable=outside, alleles=tuple(alleles),
                              reason=f"score {score} is in no CPIC range" if outside else None)

    def from_phenotype(self, text: str, source_ids: tuple[str, ...] = ()) -> Interpretation:
        if self.kind == "genotype":      # a genotype gene has no phenotypes: what is stated is the genotype
            return self.from_diplotype(text, source_ids)
        phenotype = phenotype_spelling(self._prefix.sub("", text.strip()), self._phenotypes_folded.values())
        if phenotype is None:
            raise CdsError(f"{self.gene}: '{text}' is not a phenotype of the gene table "
                           f"(one of: {', '.join(self.phenotypes)})")
        if self.kind == "activity-score":
            # Recommendations are keyed by score; the compiler adds phenotype keys for every score of
            # the phenotype (cds.compiler._phenotype_aliases), so a phenotype-only result gets CPIC's
            # advice for each score it can stand for.
            key = SCORE_NA if phenotype == INDETERMINATE else phenotype
            return Interpretation(self.gene, phenotype, {self.gene: key}, source_ids=source_ids, stated_as="phenotype")
        return Interpretation(self.gene, phenotype, {self.gene: phenotype}, source_ids=source_ids,
                              stated_as="phenotype")

    def from_score(self, text: str, source_ids: tuple[str, ...] = ()) -> Interpretation:
        if self.kind != "activity-score":
            raise CdsError(f"{self.gene} does not use activity scores")
        parsed = parse_score(text)
        if parsed is None:
            raise CdsError(f"{self.gene}: activity score '{text}' is not a number")
        score = format_score(*parsed)
        phenotype = self.phenotype_for_score(score)
        key = self.score_key(*parsed) if phenotype != INDETERMINATE else None
        if key is None:
            reason = (f"score {score} is in no CPIC range" if phenotype == INDETERMINATE else
                      f"score {score} is no sum of two CPIC {self.gene} activity values, so no CPIC lookup key covers "
                      "it")
            return Interpretation(self.gene, INDETERMINATE, {self.gene: SCORE_NA}, activity_score=score,
                                  source_ids=source_ids, stated_as="activity score", reason=reason, unreadable=True)
        return Interpretation(self.gene, phenotype, {self.gene: key}, activity_score=score,
                              source_ids=source_ids, stated_as="activity score")

    def from_allele_status(self, allele: str, present: bool, source_ids: tuple[str, ...] = ()) -> Interpretation:
        name, problem = hla_allele(allele, self.gene)
        if name is None:
            raise CdsError(f"{self.gene}: '{allele}' {problem}")
        allele = name
        match = next((a for a in self.alleles_of_interest if _same_allele(allele, a)), None)
        if self.kind != "allele-status" or match is None:
            raise CdsError(f"{self.gene}: {allele} is not an allele of interest "
                           f"({', '.join(self.alleles_of_interest) or 'none'})")
        status = f"{match} {'positive' if present else 'negative'}"
        return Interpretation(self.gene, status, {allele_attribute(self.gene, match): status},
                              source_ids=source_ids, stated_as="allele status")

    def _genotype(self, text: str, source_ids: tuple[str, ...]) -> Interpretation:
        """A genotype gene's result: two table alleles, or (a single-variant gene) any spelling of the
        variant cds/snv.py reads on its own strand; named by genotype_names where a guideline keys so."""
        cleaned = self._prefix.sub("", text.strip()).strip()
        options, problem = self._split(cleaned)
        alleles = [o[0] for o in options]
        if not problem and any(len(o) != 1 for o in options):
            problem = "a copy number not stated is not read for a genotype gene"
        if problem and self._variant is not None:
            try:
                count = variant_count(cleaned, self._variant)
            except NotThisVariant as err:
                return self._indeterminate(cleaned, str(err), source_ids)
            v = self._variant
            alleles, problem = [v.reference_allele] * (2 - count) + [v.variant_allele] * count, None
        if problem or len(alleles) != 2:
            return self._indeterminate(cleaned, problem or "a single allele was given where two are read", source_ids)
        pair = _ordered_pair(alleles, list(self._alleles))
        name = self._genotype_names.get(pair, pair)
        return Interpretation(self.gene, name, {self.gene: name}, diplotype=pair, source_ids=source_ids)

    def indeterminate(self, reason: str, diplotype: str | None = None,
                      source_ids: tuple[str, ...] = ()) -> Interpretation:
        """A result this gene's table is given no phenotype for, with why (e.g. a caller that could not
        decide between diplotypes): the lookup value CPIC keys such results by, as for any other."""
        return self._indeterminate(diplotype, reason, source_ids)

    # --- helpers ----------------------------------------------------------------------------------

    def _split(self, text: str) -> tuple[list[tuple[str, ...]], str | None]:
        """Split 'A/B' into the table alleles each side stands for, trying every '/' (allele names may
        contain one). A side stands for several alleles only when it leaves the copy number open ('*2xN')."""
        whole = self._resolve(text)
        if whole:
            return [whole], self._haploid_problem()
        positions = [i for i, ch in enumerate(text) if ch == "/"]
        if not positions:
            return [(text,)], f"'{text}' is not an allele of the {self.gene} table"
        first_unknown = None
        for i in positions:
            left, right = text[:i].strip(), text[i + 1:].strip()
            known = [self._resolve(x) for x in (left, right)]
            if all(known):
                return known, None
            if first_unknown is None:
                first_unknown = next(x for x, k in zip((left, right), known, strict=True) if not k)
        return [(part,) for part in text.split("/")], f"allele {first_unknown} is not in the {self.gene} table"

    def _resolve(self, name: str) -> tuple[str, ...]:
        """The table allele(s) a written allele name stands for, by the conventions of laboratories and of
        PharmCAT's outside calls (docs/using/Outside-Call-Format.md of PharmGKB/PharmCAT): the name itself
        or a former name the change log gives (table aliases); a structural variant written with spaces
        ('*36 + *10' is *36+*10); a PharmVar suballele as its core allele ('*4.024' is *4); a copy number
        as CPIC bins it ('*1x3', '*1x5' are *1x≥3; '>=' is '≥'); an unstated one ('*2xN') as every copy
        number the table has for that allele. () when none."""
        found = self._alleles_folded.get(_fold(name))
        if found:
            return (found,)
        written = _HYBRID_SPACES.sub("+", name.strip()).replace(">=", "≥")
        for form in dict.fromkeys((written, _SUBALLELE.sub(r"\1", written))):
            found = self._alleles_folded.get(_fold(form))
            if found:
                return (found,)
            copies = _COPIES.match(form)
            if copies:
                return self._copies(copies.group("base"), copies.group("n"))
        return ()

    def _copies(self, base: str, n: str) -> tuple[str, ...]:
        binned = [name for name in self._alleles if name.startswith(base + "x≥")]
        if n.upper() == "N":
            counted = [name for name in self._alleles if re.fullmatch(re.escape(base) + r"x≥?\d+", name)]
            return tuple(sorted(counted, key=_natural))
        for name in sorted(binned, key=_natural, reverse=True):   # the tightest bin the count reaches
            if int(n) >= int(name.rsplit("≥", 1)[1]):
                return (name,)
        return ()

    def _haploid_problem(self) -> str | None:
        if any(len(k) == 1 for k in self._pair_rules):
            return None
        return "a single allele was given where CPIC reads two"

    def _indeterminate(self, diplotype: str | None, reason: str, source_ids, unreadable: bool = True) -> Interpretation:
        """Indeterminate with its reason; `unreadable` unless CPIC's own table reads the result so."""
        key = SCORE_NA if self.kind == "activity-score" else INDETERMINATE
        return Interpretation(self.gene, INDETERMINATE, {self.gene: key}, diplotype=diplotype,
                              activity_score=SCORE_NA if self.kind == "activity-score" else None,
                              reason=reason, source_ids=source_ids, unreadable=unreadable)

    def _hla_from_typing(self, text: str, source_ids) -> Interpretation:
        """A typing ('*57:01/*08:01', 'B*57:01/B*07:02', 'HLA-B*57:01:01/HLA-B*44:02', 'B*5701/B*0702') or a
        status ('HLA-B*57:01 positive') → the status of every allele of interest. Every face reads HLA
        through here (FHIR values, `cds explain`, the workbench, screening)."""
        status_words = _HLA_STATUS.match(" ".join(text.split()))
        if status_words:
            present = status_words.group("word").lower() in ("positive", "detected", "present")
            return self.from_allele_status(status_words.group("allele"), present, source_ids)
        typed: list[str] = []
        problems: list[str] = []
        for part in (p for p in re.split(r"[/,+]", text) if p.strip()):
            name, problem = hla_allele(part, self.gene)
            if name is None:
                problems.append(f"'{part.strip()}' {problem}")
            else:
                typed.append(name)
        if problems:
            return Interpretation(self.gene, INDETERMINATE, {}, diplotype=text, reason="; ".join(problems),
                                  source_ids=source_ids, unreadable=True)
        lookup: dict[str, str] = {}
        reasons = []
        for allele in self.alleles_of_interest:
            status = _hla_status(typed, allele)
            if status is not None:
                lookup[allele_attribute(self.gene, allele)] = f"{allele} {status}"
            elif any(_fields(t)[:2] == _fields(allele) for t in typed):
                reasons.append(f"{allele}: typing '{text}' names it with an expression suffix (e.g. N, null); "
                               "not read as positive or negative")
            else:
                reasons.append(f"{allele}: typing '{text}' is not two alleles at two-field resolution")
        if not lookup:
            return Interpretation(self.gene, INDETERMINATE, {}, diplotype=text, reason="; ".join(reasons),
                                  source_ids=source_ids, unreadable=True)
        phenotype = "; ".join(lookup.values())
        return Interpretation(self.gene, phenotype, lookup, diplotype="/".join(typed),
                              reason="; ".join(reasons) or None, source_ids=source_ids)


def _ordered_pair(alleles: list[str], order: list[str]) -> str:
    """Two alleles as one diplotype, in the table's order (so 'T/C' and 'C/T' are one genotype)."""
    rank = {name: i for i, name in enumerate(order)}
    return "/".join(sorted(alleles, key=lambda a: rank.get(a, len(rank))))


# HLA allele names as laboratories and tools write them (WHO nomenclature, hla.alleles.org/nomenclature/
# naming.html): 'HLA-B*57:01:01:02', 'B*57:01', '*57:01', '57:01', and before April 2010 'B*5701' (a
# two-field name as four digits; a five-digit one may be a third field or a three-digit second field, so
# only four digits are read). Fields after the second (PharmCAT: 'HLA-B *07:02:01:127' is *07:02) and an
# expression suffix letter are kept: an allele of interest is matched on its first two fields.
_HLA_NAME = re.compile(r"^(?:HLA-)?(?P<locus>[A-Z][A-Z0-9]*)?\*?"
                       r"(?P<fields>\d{2,4}(?::\d{2,4}){0,3})(?P<suffix>[A-Z]?)$",
                       re.IGNORECASE)
_HLA_STATUS = re.compile(r"^(?P<allele>.+?)\s+(?P<word>positive|negative|not detected|detected|present|absent)$",
                         re.IGNORECASE)


def hla_allele(text: str, gene: str) -> tuple[str | None, str | None]:
    """One HLA allele as written → ('*57:01[:…][suffix]', None), or (None, why not). The reason names no
    value (it may be audited)."""
    m = _HLA_NAME.match("".join(text.split()))
    if not m:
        return None, f"is not an {gene} allele name"
    locus = (m.group("locus") or "").upper()
    if locus and locus != gene.upper().removeprefix("HLA-"):
        return None, f"names HLA-{locus}, not {gene}"
    fields = m.group("fields")
    if ":" not in fields:
        if len(fields) != 4 and len(fields) != 2:
            return None, f"is not an {gene} allele name (only a four-digit name without colons is unambiguous)"
        fields = f"{fields[:2]}:{fields[2:]}" if len(fields) == 4 else fields
    return "*" + fields + m.group("suffix").upper(), None


def _fields(name: str) -> tuple[str, ...]:
    return tuple(name.lstrip("*").rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ").split(":"))


def _hla_status(typed: list[str], allele_of_interest: str) -> str | None:
    """'positive' when a typed allele is the allele of interest (its first two fields, no expression suffix),
    'negative' when two alleles are typed at two-field resolution or better and neither is it, else None."""
    wanted = _fields(allele_of_interest)
    if any(_fields(t)[:len(wanted)] == wanted and not t[-1].isalpha() for t in typed):
        return "positive"
    if len(typed) == 2 and all(len(_fields(t)) >= 2 for t in typed) and \
            not any(_fields(t)[:len(wanted)] == wanted for t in typed):
        return "negative"
    return None


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()


_HYBRID_SPACES = re.compile(r"\s*\+\s*")
_SUBALLELE = re.compile(r"(\*\d+)\.\d{3}(?!\d)")            # PharmVar suballele *4.024 → core allele *4
_COPIES = re.compile(r"^(?P<base>\*[^x\s]+)x(?P<n>\d+|[Nn])$")   # '*1x3', '*2xN' (PharmVar notation)
_METABOLISER = re.compile(r"(?i)metaboli[sz]ers?\b")
_EXTENSIVE = re.compile(r"(?i)\bextensive metabolizer\b")
_TRAILING_ABBREVIATION = re.compile(r"\s*\(\s*[A-Za-z]{2,3}\s*\)$")


def phenotype_spelling(text: str, terms) -> str | None:
    """CPIC's term among `terms` for a phenotype as laboratories and PharmCAT's outside calls write it
    (PharmCAT docs/using/Outside-Call-Format.md, "Phenotypes"): any capitalisation and spacing, British
    "Metaboliser" and plurals, a trailing abbreviation in parentheses ("Ultrarapid Metabolizers (UM)"),
    an abbreviation alone — the initials of the term (PM, IM, NM, UM; RM for Rapid Metabolizer, where
    the gene has it) —, and "EM"/"Extensive Metabolizer", CPIC's former name of Normal Metabolizer.
    None when it is none of them."""
    by_fold = {_fold(t): t for t in terms}
    cleaned = _TRAILING_ABBREVIATION.sub("", _METABOLISER.sub("Metabolizer", " ".join(text.split())))
    cleaned = _EXTENSIVE.sub("Normal Metabolizer", cleaned)
    found = by_fold.get(_fold(cleaned))
    if found:
        return found
    initials: dict[str, list[str]] = {}
    for term in terms:
        if term.endswith("Metabolizer"):
            initials.setdefault("".join(w[0] for w in term.split()).casefold(), []).append(term)
    if "normal metabolizer" in by_fold:
        initials.setdefault("em", [by_fold["normal metabolizer"]])
    matches = initials.get(cleaned.casefold(), [])
    return matches[0] if len(matches) == 1 else None


_PARENTHESISED = re.compile(r"^(?P<main>.+?)\s*\((?P<alias>[^()]+)\)$")


def _allele_index(names) -> dict[str, str]:
    """Folded name → table name, plus the short forms labs write for names like 'c.1905+1G>A (*2A)'
    or 'B (reference)': the part before the parenthesis, and a star allele inside it. An alias that
    would point at two alleles is left out rather than guessed."""
    index = {_fold(n): n for n in names}
    aliases: dict[str, set[str]] = {}
    for name in names:
        m = _PARENTHESISED.match(name)
        if not m:
            continue
        forms = [m.group("main")] + ([m.group("alias")] if m.group("alias").startswith("*") else [])
        for form in forms:
            aliases.setdefault(_fold(form), set()).add(name)
    for alias, targets in aliases.items():
        if alias not in index and len(targets) == 1:
            index[alias] = next(iter(targets))
    return index


def _same_allele(typed: str, allele_of_interest: str) -> bool:
    """HLA alleles match when the typed allele equals the allele of interest in its first fields."""
    wanted = _fields(allele_of_interest)
    return _fields(typed)[:len(wanted)] == wanted


def disagree(interpretations: list[Interpretation]) -> bool:
    """Results of one gene that are stated in several ways must mean the same: the same phenotype,
    and the same lookup value for every attribute they both state (a phenotype-only statement of a
    score gene has no score to compare, so only its phenotype counts). Shared by the FHIR pipeline
    and the engine, so typed statements (`cds explain`, the workbench) and FHIR results conflict alike."""
    if len({i.phenotype for i in interpretations if i.stated_as != "allele status"}) > 1:
        return True
    seen: dict[str, str] = {}
    for i in interpretations:
        if i.stated_as == "phenotype":
            continue
        for attr, value in i.lookup.items():
            if seen.setdefault(attr, value) != value:
                return True
    return False


def describe(interpretation: Interpretation) -> str:
    """One result as stated, in the `GENE=VALUE` syntax's words, with what it means: '*1/*1 (Normal
    Metabolizer)', 'score:1.0 (Intermediate Metabolizer)', 'Poor Metabolizer'."""
    i = interpretation
    if i.diplotype:
        stated = i.diplotype
    elif i.stated_as == "activity score":
        stated = f"score:{i.activity_score}"
    else:
        return i.phenotype
    return f"{stated} ({i.phenotype})"


def interpret_value(interpreter: GeneInterpreter, value: str, source_ids: tuple[str, ...] = ()) -> Interpretation:
    """Read the `--genotype GENE=VALUE` syntax: a diplotype, a phenotype, `score:X` or an HLA status."""
    text = value.strip()
    if text.lower().startswith("score:"):
        return interpreter.from_score(text[6:], source_ids)
    if interpreter.kind in ("allele-status", "genotype"):
        return interpreter.from_diplotype(text, source_ids)
    if "/" in text or text.startswith("*") or _fold(text) in interpreter._alleles_folded:
        return interpreter.from_diplotype(text, source_ids)
    return interpreter.from_phenotype(text, source_ids)
