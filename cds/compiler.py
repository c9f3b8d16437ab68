"""Compile the knowledge base into match plans, one per drug: which fact values select which
recommendation, and which CDS rule (local policy) governs the drug.

The plans are plain data; cds/engine.py registers them with durable-rules. Doing this once at
start-up keeps the request path to "build one fact per ordered drug, assert it, read what fired".

Facts: one per ordered drug, one attribute per gene the drug's recommendations look up (for
allele-status genes one attribute per allele of interest, e.g. "HLA-B *57:01"), valued with the
patient's lookup value or CPIC's "No Result" when nothing is on file.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from cds.genotype import (
    INDETERMINATE,
    OTHER_GENOTYPE,
    SCORE_NA,
    GeneInterpreter,
    allele_attribute,
    genotype_attribute,
    parse_score,
)
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT, Guideline, Recommendation, Rule


@dataclass(frozen=True)
class MatchPlan:
    """One compiled condition: when every attribute has its value, `recommendation` applies."""

    guideline: Guideline
    recommendation: Recommendation
    conditions: dict[str, str]
    # "lookup": the source's own key; "phenotype": a phenotype-only result (_phenotype_aliases);
    # "implied phenotype": an activity score whose phenotype the source keys by (_implied_phenotype_aliases);
    # "missing result": a gene of the key has no result on file (_missing_partner_aliases)
    matched_by: str = "lookup"
    score: str | None = None         # phenotype-only: the activity score this recommendation is CPIC's advice for
    score_gene: str | None = None    # … and the gene it is a score of
    # a gene the lookup needs with no result on file, where the source has no "No Result" key for it: the
    # value of that gene this recommendation is the advice for (_missing_partner_aliases)
    missing_gene: str | None = None
    missing_value: str | None = None


@dataclass(frozen=True)
class PreTestPlan:
    rule: Rule
    gene: str
    conditions: dict[str, str]       # every attribute of the gene is "No Result"


@dataclass
class DrugPlan:
    drug: str
    rxnorm: str | None                                      # None: the sources give none; found by name
    ruleset: str                                            # durable-rules ruleset name
    attributes: dict[str, str] = field(default_factory=dict)  # attribute → gene
    matches: list[MatchPlan] = field(default_factory=list)
    pretests: list[PreTestPlan] = field(default_factory=list)
    # The rules that may govern the drug, in the order they are tried: the rules naming it, then the
    # `drugs: '*'` rule. Which one governs depends on the day (effective_from/until), so it is decided
    # at call time (`rules_on`), never frozen at start-up.
    candidates: list[Rule] = field(default_factory=list)
    populations: set[str] = field(default_factory=set)
    # genotype attribute (cds.genotype.genotype_attribute) → the genotypes some recommendation is keyed by;
    # the engine asserts the patient's genotype when it is one of them, else OTHER_GENOTYPE
    genotype_keys: dict[str, set[str]] = field(default_factory=dict)

    def rules_on(self, day: date | None = None) -> dict[str, Rule]:
        """Hook → the CDS rule that governs the drug on `day` (default: today)."""
        day = day or date.today()
        out = {}
        for hook in HOOKS:
            rule = governing_rule(self.candidates, hook, day)
            if rule is not None:
                out[hook] = rule
        return out

    @property
    def rules(self) -> dict[str, Rule]:
        """Hook → the CDS rule that governs the drug today."""
        return self.rules_on()


@dataclass
class CompiledKnowledge:
    kb: KnowledgeBase
    drugs: dict[str, DrugPlan]                              # by drug name
    by_rxnorm: dict[str, DrugPlan]


def _attribute_values(interp: GeneInterpreter, gene: str, value: str, drug_alleles: list[str]) -> dict[str, str]:
    """Engine conditions for one (gene, lookup value) of a recommendation."""
    genotype = interp.genotype_of_key(value) if value != NO_RESULT else None
    if genotype is not None:       # keyed by genotype (DPWG's allele counts), not by what it means
        return {genotype_attribute(gene): genotype}
    if interp.kind != "allele-status":
        return {gene: value}
    if value == NO_RESULT:
        return {allele_attribute(gene, a): NO_RESULT for a in drug_alleles}
    allele = value.split()[0]
    return {allele_attribute(gene, allele): value}


HOOKS = ("order-select", "order-sign", "patient-view")


def in_effect(rule: Rule, day: date) -> bool:
    """Whether the rule is in force on `day` (its effective_from/effective_until, both inclusive)."""
    return (rule.effective_from is None or rule.effective_from <= day) and \
        (rule.effective_until is None or day <= rule.effective_until)


def scheduled(rule: Rule, day: date | None = None) -> bool:
    """A rule whose effective_from is still ahead: written, not yet in force."""
    return rule.effective_from is not None and (day or date.today()) < rule.effective_from


def candidate_rules(kb: KnowledgeBase, drug: str) -> list[Rule]:
    """The rules that may govern a drug: those naming it, then the `drugs: '*'` rule."""
    naming = [r for r in kb.rules if r.drugs != "*" and drug in r.drugs]
    return naming + [r for r in kb.rules if r.drugs == "*"]


def governing_rule(candidates: list[Rule], hook: str, day: date) -> Rule | None:
    """The rule that governs on a hook and day. The rules naming the drug that are in force that day
    take it over: the one listing the hook governs, and on other hooks, or when switched off
    (`enabled: false`), the drug is silent. When none naming it is in force (none, or scheduled, or
    expired), the `drugs: '*'` rule governs, if it is in force and lists the hook."""
    naming = [r for r in candidates if r.drugs != "*" and in_effect(r, day)]
    if naming:
        return next((r for r in naming if r.enabled and hook in r.hooks), None)
    return next((r for r in candidates if r.drugs == "*" and r.enabled and hook in r.hooks and in_effect(r, day)),
                None)


def _phenotype_aliases(plan: DrugPlan, kb: KnowledgeBase) -> list[MatchPlan]:
    """Conditions for results stated only as a phenotype of an activity-score gene.

    CPIC keys CYP2D6, CYP2C9 and DPYD recommendations by activity score, but labs often report the
    phenotype alone ("DPYD Poor Metabolizer"), which stands for several scores. Where every score of
    the phenotype leads to the same recommendation (same classification and text, all else equal),
    one condition keyed by the phenotype selects it. Where the scores' recommendations differ, the
    phenotype selects each of them, labelled with the score it is CPIC's advice for (`score`): the
    clinician sees every answer the phenotype allows (the engine orders them most cautious first)
    and that the activity score decides between them, never a guess and never nothing."""
    aliases: list[MatchPlan] = []
    for gene in sorted({g for g in plan.attributes.values() if kb.interpreters[g].kind == "activity-score"}):
        interp = kb.interpreters[gene]
        groups: dict[tuple, list[MatchPlan]] = defaultdict(list)
        for m in plan.matches:
            value = m.conditions.get(gene)
            if value is None or value in (NO_RESULT, SCORE_NA):
                continue
            phenotype = interp.phenotype_for_score(value)
            if phenotype == INDETERMINATE:
                continue
            others = tuple(sorted((k, v) for k, v in m.conditions.items() if k != gene))
            # per source: CPIC's and DPWG's advice for one phenotype differ in wording, not in whether it is one
            groups[(m.guideline.source, m.recommendation.population, others, phenotype)].append(m)
        for (_source, _population, others, phenotype), members in groups.items():
            conditions = {**dict(others), gene: phenotype}
            content = {(m.recommendation.classification, m.recommendation.recommendation) for m in members}
            if len(content) == 1:
                first = min(members, key=lambda m: _score_order(m.conditions[gene]))
                aliases.append(MatchPlan(first.guideline, first.recommendation, conditions, matched_by="phenotype"))
                continue
            for m in sorted(members, key=lambda m: _score_order(m.conditions[gene])):
                aliases.append(MatchPlan(m.guideline, m.recommendation, conditions, matched_by="phenotype",
                                         score=m.conditions[gene], score_gene=gene))
    return aliases


def _restrict_to_other_genotypes(plan: DrugPlan) -> None:
    """A guideline that keys a gene by genotype for some results and by phenotype for the rest (DPWG:
    siponimod CYP2C9 *2/*2 "no action", Intermediate Metabolizer "50% of the dose") means its genotype
    keys to win: its phenotype-keyed advice applies to genotypes it does not name (and to a result stated
    as a phenotype), never beside the genotype's own advice."""
    keyed = {(m.guideline.id, attr) for m in plan.matches for attr in m.conditions if attr in plan.genotype_keys}
    restricted = []
    for m in plan.matches:
        extra = {attr: OTHER_GENOTYPE for attr in plan.genotype_keys
                 if (m.guideline.id, attr) in keyed and attr not in m.conditions
                 and any(plan.attributes.get(a) == plan.attributes[attr] for a in m.conditions)}
        restricted.append(replace(m, conditions={**m.conditions, **extra}) if extra else m)
    plan.matches = restricted


def _implied_phenotype_aliases(plan: DrugPlan, kb: KnowledgeBase) -> list[MatchPlan]:
    """Conditions for recommendations keyed by a phenotype of an activity-score gene (DPWG keys CYP2C9 so:
    siponimod "Poor Metabolizer"): a diplotype or score result is asserted as its activity score, so each
    score CPIC's ranges give that phenotype selects the recommendation too."""
    aliases = []
    for m in plan.matches:
        if m.matched_by != "lookup":
            continue
        for gene, value in m.conditions.items():
            interp = kb.interpreters.get(gene)
            if (interp is None or interp.kind != "activity-score" or value not in interp.phenotypes
                    or value == INDETERMINATE):
                continue
            for score in sorted(interp.scores_for_phenotype(value), key=_score_order):
                aliases.append(MatchPlan(m.guideline, m.recommendation, {**m.conditions, gene: score},
                                         matched_by="implied phenotype"))
    return aliases


def _missing_partner_aliases(plan: DrugPlan, kb: KnowledgeBase) -> list[MatchPlan]:
    """Conditions for a recommendation keyed by several genes when one of them has no result on file.

    CPIC keys thiopurines by TPMT and NUDT15 and has no "No Result" key for either, so TPMT *1/*3A alone
    (the most common thiopurine report) matched nothing. Where a recommendation's key needs a gene the
    patient has no result for and the source has no "No Result" key for that gene beside the same values
    of the others (same guideline and population), that gene's "No Result" selects the source's advice for
    every value the gene can take, each labelled with it (`missing_gene`, `missing_value`): the clinician
    sees every answer a result for that gene could give, most cautious first, and that the result decides.
    Where the source has the "No Result" key (amitriptyline: CYP2D6 without CYP2C19), that key answers."""
    aliases: list[MatchPlan] = []
    lookups = [m for m in plan.matches if m.matched_by == "lookup" and len(m.recommendation.lookup) > 1]
    for gene in sorted({g for m in lookups for g in m.recommendation.lookup}):
        attrs = sorted({a for m in lookups for a in m.conditions if plan.attributes.get(a) == gene})
        groups: dict[tuple, list[MatchPlan]] = defaultdict(list)
        answered: set[tuple] = set()
        for m in lookups:
            others = tuple(sorted((a, v) for a, v in m.conditions.items() if plan.attributes.get(a) != gene))
            if any(v == NO_RESULT for _, v in others):
                continue      # another gene is missing too: a result for one of them alone would not decide
            key = (m.guideline.id, m.recommendation.population, others)
            if m.recommendation.lookup.get(gene) == NO_RESULT:
                answered.add(key)
            else:
                groups[key].append(m)
        for key, members in groups.items():
            if key in answered:
                continue
            conditions = {**dict(key[2]), **{a: NO_RESULT for a in attrs}}
            for m in members:
                aliases.append(MatchPlan(m.guideline, m.recommendation, conditions, matched_by="missing result",
                                         missing_gene=gene, missing_value=m.recommendation.lookup[gene]))
    return aliases


def _score_order(score: str) -> tuple:
    parsed = parse_score(score)
    return parsed if parsed is not None else (Decimal("Infinity"), True)


def compile_knowledge(kb: KnowledgeBase) -> CompiledKnowledge:
    plans: dict[str, DrugPlan] = {}
    for guideline in kb.guidelines.values():
        for drug in guideline.drugs:
            plan = plans.get(drug.name)
            if plan is None:
                # a drug the sources give no RxNorm code is found by its name (orders, explain, workbench)
                ruleset = (f"drug_{drug.rxnorm}" if drug.rxnorm
                           else "drug_" + re.sub(r"[^a-z0-9]+", "_", drug.name.lower()))
                plan = plans[drug.name] = DrugPlan(drug.name, drug.rxnorm, ruleset=ruleset)
            recs = [r for r in guideline.recommendations if r.drug == drug.name]
            alleles: dict[str, list[str]] = defaultdict(list)
            for rec in recs:
                for gene, value in rec.lookup.items():
                    if kb.interpreters[gene].kind == "allele-status" and value != NO_RESULT:
                        allele = value.split()[0]
                        if allele not in alleles[gene]:
                            alleles[gene].append(allele)
            for rec in recs:
                conditions: dict[str, str] = {}
                for gene, value in rec.lookup.items():
                    gene_conditions = _attribute_values(kb.interpreters[gene], gene, value, alleles[gene])
                    conditions.update(gene_conditions)
                    for attribute, condition in gene_conditions.items():
                        plan.attributes[attribute] = gene
                        if attribute == genotype_attribute(gene):
                            plan.genotype_keys.setdefault(attribute, set()).add(condition)
                plan.matches.append(MatchPlan(guideline, rec, conditions))
                if guideline.source != "DPWG":  # DPWG names no populations (null in the export): it applies to any
                    plan.populations.add(rec.population)
    for plan in plans.values():
        _restrict_to_other_genotypes(plan)
        plan.matches.extend(_phenotype_aliases(plan, kb))
        plan.matches.extend(_implied_phenotype_aliases(plan, kb))
        plan.matches.extend(_missing_partner_aliases(plan, kb))
        plan.candidates = candidate_rules(kb, plan.drug)
        for rule in plan.candidates:  # every rule that may govern on some day: the day picks its alerts
            if not rule.enabled:
                continue
            for gene in (rule.pretest.genes if rule.pretest else []):
                interp = kb.interpreters[gene]
                attrs = [a for a, g in plan.attributes.items() if g == gene and a not in plan.genotype_keys]
                if not attrs:
                    attrs = ([allele_attribute(gene, a) for a in interp.alleles_of_interest]
                             if interp.kind == "allele-status" else [gene])
                for a in attrs:
                    plan.attributes.setdefault(a, gene)
                plan.pretests.append(PreTestPlan(rule, gene, {a: NO_RESULT for a in attrs}))
    return CompiledKnowledge(kb, plans, {p.rxnorm: p for p in plans.values() if p.rxnorm})
