"""Checks that span files: every name a file uses must exist elsewhere, and nothing may be ambiguous.

Each finding is a Diagnostic with the file and line of the offending value.
"""
from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

from cds.dosing.validate import check_dosing
from cds.errors import CdsError, Diagnostic
from cds.genotype import SCORE_NA, interpret_value
from cds.knowledge.models import NO_RESULT

if TYPE_CHECKING:
    from cds.knowledge.loader import KnowledgeBase

_RXCUI = re.compile(r"^\d+$")
_PREFETCH_TOKEN = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
_KNOWN_TOKENS = re.compile(r"^(context\.[A-Za-z]+|userPractitionerId|userPractitionerRoleId|userPatientId"
                           r"|userRelatedPersonId)$")


def producible_values(kb: KnowledgeBase, gene: str) -> set[str]:
    """The lookup values a gene table can produce (plus CPIC's 'No Result' for a missing result)."""
    interp = kb.interpreters[gene]
    values = {NO_RESULT}
    for vals in interp.lookup_values().values():
        values |= vals
    return values


def cross_link(kb: KnowledgeBase) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    diags += _check_genes(kb)
    diags += _check_guidelines(kb)
    diags += _check_rules(kb)
    diags += _check_summaries(kb)
    diags += _check_services(kb)
    diags += check_dosing(kb)
    return diags


# The placeholders the card renderer fills in (cds/cards/text.py); a template naming another would fail at
# the first card, so it is refused here, with its line.
SUMMARY_PLACEHOLDERS = {"Drug", "drug", "results", "action", "population", "classification"}
PRETEST_PLACEHOLDERS = {"Drug", "drug", "gene", "test"}


def _template_problem(template: str, allowed: set[str]) -> str | None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        return f"summary template is malformed ({err}); write a literal brace as {{{{ or }}}}"
    unknown = sorted({f for f in fields if f not in allowed})
    if unknown:
        return (f"summary template names unknown placeholder(s) {', '.join('{' + f + '}' for f in unknown)} "
                f"(known: {', '.join('{' + f + '}' for f in sorted(allowed))})")
    return None


def _check_summaries(kb: KnowledgeBase) -> list[Diagnostic]:
    diags = []
    for rule in kb.rules:
        templates: list[tuple[str | None, set[str], tuple[str | int, ...]]] = [
            (rule.summary, SUMMARY_PLACEHOLDERS, ("summary",))]
        templates += [(adj.summary, SUMMARY_PLACEHOLDERS, ("adjustments", j, "summary"))
                      for j, adj in enumerate(rule.adjustments)]
        if rule.pretest:
            templates.append((rule.pretest.summary, PRETEST_PLACEHOLDERS, ("pretest", "summary")))
        malformed = False
        for template, allowed, where in templates:
            problem = template and _template_problem(template, allowed)
            if problem:
                malformed = True
                diags.append(kb.diag(rule, f"rule {rule.id}: {problem}", *where))
        if not malformed:
            diags += _overlong_summaries(kb, rule)
    return diags


def _overlong_summaries(kb: KnowledgeBase, rule) -> list[Diagnostic]:
    """A summary template that, filled in for a recommendation the rule cards, is longer than a CDS
    Hooks summary may be: the card would fall back to the default wording, so it is refused here,
    with the longest filling as the example."""
    from cds.cards import SUMMARY_LIMIT, CardRenderer
    from cds.cards.text import genetic_test_name, pretest_filled, template_summary

    renderer = CardRenderer(kb)
    longest: dict[tuple, tuple[int, str, str]] = {}     # template location → (length, text, recommendation)
    for drug in _governed_drugs(kb, rule):
        for guideline in kb.drugs().get(drug, []):
            if rule.guideline and guideline.id != rule.guideline:
                continue
            for rec in (r for r in guideline.recommendations if r.drug == drug):
                policy = renderer.policy(rule, rec)
                if policy is None or not policy.summary_template:
                    continue
                text = template_summary(policy.summary_template, drug, rec, _summary_results(kb, rec))
                where = _template_location(rule, policy.summary_template)
                if len(text) > longest.get(where, (SUMMARY_LIMIT, "", ""))[0]:
                    longest[where] = (len(text), text, rec.id)
        if rule.pretest and rule.pretest.summary:
            for gene in rule.pretest.genes:
                text = pretest_filled(drug, gene, genetic_test_name(gene, rule.pretest.test_display),
                                      rule.pretest.summary)
                if len(text) > longest.get(("pretest", "summary"), (SUMMARY_LIMIT, "", ""))[0]:
                    longest[("pretest", "summary")] = (len(text), text, f"{drug}, no {gene} result")
    return [kb.diag(rule, f"rule {rule.id}: summary template gives {length} characters for {example} "
                          f"(a card summary has at most {SUMMARY_LIMIT}): {text!r}", *where)
            for where, (length, text, example) in longest.items()]


def _governed_drugs(kb: KnowledgeBase, rule) -> list[str]:
    """The drugs whose cards a rule may word: those it names, or for `drugs: '*'` every drug no other rule names."""
    if rule.drugs != "*":
        return [d for d in rule.drugs if d in kb.drugs()]
    named = {d for r in kb.rules if r.drugs != "*" for d in r.drugs}
    return sorted(d for d in kb.drugs() if d not in named)


def _template_location(rule, template: str) -> tuple:
    for j, adj in enumerate(rule.adjustments):
        if adj.summary == template:
            return ("adjustments", j, "summary")
    return ("summary",)


def _summary_results(kb: KnowledgeBase, rec) -> str:
    """The `{results}` of a card for this recommendation, as the renderer words them."""
    from cds.cards.text import result_name

    parts = []
    for gene, value in rec.lookup.items():
        if value == NO_RESULT or gene not in kb.interpreters:
            continue
        interpreter = kb.interpreters[gene]
        allele_status = interpreter.kind == "allele-status"
        text = result_name(gene, value if allele_status else interpreter.phenotype_of_key(value), allele_status)
        if text not in parts:
            parts.append(text)
    return "; ".join(parts) or "no result on file"


def notices(kb: KnowledgeBase) -> list[Diagnostic]:
    """Findings that are valid but worth saying: they do not fail validation."""
    out = []
    for g in kb.guidelines.values():
        if not g.citations:
            out.append(kb.diag(g, f"notice: guideline {g.id} has no PMID in its source release; it is cited by its URL "
                                  f"{g.url}", "citations"))
    return sorted(out)


def _check_genes(kb: KnowledgeBase) -> list[Diagnostic]:
    diags = []
    for table in kb.genes.values():
        ruled = {f for r in table.phenotype_rules for f in r.functions}
        declared = set(table.functions_without_rule)
        if table.kind != "function-pair":
            continue
        for name, allele in table.alleles.items():
            if allele.function and allele.function not in ruled and allele.function not in declared:
                diags.append(kb.diag(table, f"allele {name}: function '{allele.function}' appears in no phenotype "
                                            "rule (a typo? if CPIC has no rule for it, list it under "
                                            "functions_without_rule)", "alleles", name))
    return diags


def _check_guidelines(kb: KnowledgeBase) -> list[Diagnostic]:
    from cds.knowledge.reachability import check_unreachable

    diags = check_unreachable(kb)
    seen: dict[tuple, tuple[str, int]] = {}
    for g in kb.guidelines.values():
        drug_names = {d.name for d in g.drugs}
        keyed_genes = {gene for r in g.recommendations for gene in r.lookup}
        for i, gene in enumerate(g.genes):
            if gene not in kb.genes and gene in keyed_genes:
                diags.append(kb.diag(g, f"unknown gene '{gene}': no gene table guidelines/genes/{gene}.yaml", "genes",
                                     i))
        for i, drug in enumerate(g.drugs):
            if not drug.rxnorm and drug.no_rxnorm:
                continue  # matched by name, with the reason the sources give no code (cds validate lists it)
            if not drug.rxnorm:
                diags.append(kb.diag(g, f"drug '{drug.name}' has no RxNorm ingredient code (rxnorm); add the code with "
                                        "its source, or say why there is none (no_rxnorm: orders then match its name)",
                                     "drugs", i))
            elif not _RXCUI.match(drug.rxnorm):
                diags.append(kb.diag(g, f"drug '{drug.name}': RxNorm code '{drug.rxnorm}' is not a number", "drugs", i,
                                     "rxnorm"))
        for rec in g.recommendations:
            if rec.drug not in drug_names:
                diags.append(kb.diag(rec,
                                     f"recommendation {rec.id}: drug '{rec.drug}' is not among the guideline's drugs",
                                     "drug"))
            for gene, value in rec.lookup.items():
                if gene not in g.genes:
                    diags.append(kb.diag(rec,
                                         f"recommendation {rec.id}: gene '{gene}' is not among the guideline's genes",
                                         "lookup", gene))
                if gene not in kb.genes:
                    diags.append(kb.diag(rec, f"recommendation {rec.id}: unknown gene '{gene}' (no gene table)",
                                         "lookup", gene))
                    continue
                producible = producible_values(kb, gene)
                if g.source == "DPWG":  # DPWG keys CYP2C9 by phenotype: a result reported as one matches it
                    producible = producible | set(kb.interpreters[gene].phenotypes)
                genotype = kb.interpreters[gene].genotype_of_key(value) if value not in producible else None
                if genotype is not None and genotype != value:
                    diags.append(kb.diag(rec, f"recommendation {rec.id}: write the {gene} genotype '{value}' as "
                                              f"'{genotype}' (alleles in table order)", "lookup", gene))
                elif value not in producible and genotype is None:
                    diags.append(kb.diag(rec, f"recommendation {rec.id}: the {gene} gene table cannot produce "
                                              f"'{value}'{_hint(kb, gene)}", "lookup", gene))
            key = (g.source, rec.drug, rec.population, frozenset(rec.lookup.items()))  # CPIC and DPWG may both advise
            file, line = kb.where(rec)
            if key in seen:
                f0, l0 = seen[key]
                diags.append(Diagnostic(file, line, f"recommendation {rec.id} overlaps the one at {f0}:{l0}: same drug "
                                                    f"'{rec.drug}', population '{rec.population}' and lookup "
                                                    f"{dict(rec.lookup)}"))
            else:
                seen[key] = (file, line)
    return diags


def _hint(kb: KnowledgeBase, gene: str) -> str:
    table = kb.genes[gene]
    if table.kind == "function-pair":
        return f" (it produces: {', '.join(sorted(producible_values(kb, gene)))})"
    if table.kind == "activity-score":
        return f" (it produces activity scores such as 1.0 or ≥3.0, '{SCORE_NA}' and '{NO_RESULT}')"
    return f" (it produces '<allele> positive|negative' for {', '.join(table.alleles_of_interest)})"


def _check_rules(kb: KnowledgeBase) -> list[Diagnostic]:
    diags = []
    drugs = kb.drugs()
    recs = kb.recommendation_index()
    claimed: dict[tuple[str, str], str] = {}
    wildcard_rules = [r for r in kb.rules if r.drugs == "*"]
    for extra in wildcard_rules[1:]:
        diags.append(kb.diag(extra, f"rule {extra.id}: only one rule may use drugs: '*' "
                                    f"({wildcard_rules[0].id} already does)", "drugs"))
    for rule in kb.rules:
        guideline = kb.guidelines.get(rule.guideline) if rule.guideline else None
        if rule.guideline and guideline is None:
            diags.append(kb.diag(rule, f"rule {rule.id}: unknown guideline '{rule.guideline}'", "guideline"))
            continue
        if rule.drugs == "*":
            if rule.guideline:
                diags.append(kb.diag(rule, f"rule {rule.id}: drugs '*' cannot be limited to a guideline", "guideline"))
            rule_drugs = set(drugs)
        else:
            rule_drugs = set()
            for i, drug in enumerate(rule.drugs):
                if guideline and drug not in {d.name for d in guideline.drugs}:
                    diags.append(kb.diag(rule,
                                         f"rule {rule.id}: drug '{drug}' is not a drug of guideline {guideline.id}",
                                         "drugs", i))
                elif drug not in drugs:
                    diags.append(kb.diag(rule, f"rule {rule.id}: unknown drug '{drug}' (no guideline covers it)",
                                         "drugs", i))
                else:
                    rule_drugs.add(drug)
                    if rule.enabled:
                        for hook in rule.hooks:
                            other = claimed.get((drug, hook))
                            if other:
                                diags.append(kb.diag(rule,
                                                     f"rule {rule.id}: drug '{drug}' on {hook} is already governed by "
                                                     f"rule {other}", "drugs", i))
                            claimed[(drug, hook)] = rule.id
        rule_genes = set(guideline.genes) if guideline else set(kb.genes)
        rule_recs = [r for g in kb.guidelines.values() for r in g.recommendations if r.drug in rule_drugs
                     and (guideline is None or r in guideline.recommendations)]
        if rule.population and rule.drugs != "*" and rule.population not in {r.population for r in rule_recs}:
            diags.append(kb.diag(rule,
                                 f"rule {rule.id}: population '{rule.population}' matches none of its recommendations "
                                       f"({', '.join(sorted({r.population for r in rule_recs}))})", "population"))
        for j, adj in enumerate(rule.adjustments):
            for gene, values in adj.when.items():
                if gene not in rule_genes or gene not in kb.genes:
                    diags.append(kb.diag(rule,
                                         f"rule {rule.id}: adjustment names gene '{gene}', which the rule's guideline "
                                         "does not use",
                                         "adjustments", j, "when", gene))
                    continue
                producible = producible_values(kb, gene) | set(kb.interpreters[gene].phenotypes)
                for k, value in enumerate(values):
                    if value not in producible:
                        diags.append(kb.diag(rule,
                                             f"rule {rule.id}: the {gene} gene table cannot produce "
                                             f"'{value}'{_hint(kb, gene)}",
                                             "adjustments", j, "when", gene, k))
            for k, rec_id in enumerate(adj.recommendations):
                found = recs.get(rec_id)
                if found is None:
                    diags.append(kb.diag(rule, f"rule {rule.id}: unknown recommendation '{rec_id}'", "adjustments", j,
                                         "recommendations", k))
                elif found[1].drug not in rule_drugs:
                    diags.append(kb.diag(rule,
                                         f"rule {rule.id}: recommendation '{rec_id}' is for {found[1].drug}, not a "
                                         "drug of this rule",
                                         "adjustments", j, "recommendations", k))
        if rule.pretest:
            for k, gene in enumerate(rule.pretest.genes):
                if gene not in kb.genes:
                    diags.append(kb.diag(rule, f"rule {rule.id}: pre-test alert names unknown gene '{gene}'",
                                         "pretest", "genes", k))
        for k, alt in enumerate(rule.alternatives):
            if not _RXCUI.match(alt.rxnorm):
                diags.append(kb.diag(rule,
                                     f"rule {rule.id}: alternative '{alt.name}' has a non-numeric RxNorm code "
                                     f"'{alt.rxnorm}'",
                                     "alternatives", k, "rxnorm"))
        for t, case in enumerate(rule.tests):
            for k, drug in enumerate(case.drugs):
                if drug not in drugs:
                    diags.append(kb.diag(rule, f"rule {rule.id}, test '{case.name}': unknown drug '{drug}'", "tests",
                                         t, "drugs", k))
            for gene, value in case.genotypes.items():
                if gene not in kb.interpreters:
                    diags.append(kb.diag(rule, f"rule {rule.id}, test '{case.name}': unknown gene '{gene}'", "tests",
                                         t, "genotypes", gene))
                    continue
                try:
                    interpret_value(kb.interpreters[gene], str(value))
                except CdsError as err:
                    diags.append(kb.diag(rule, f"rule {rule.id}, test '{case.name}': {err}", "tests", t, "genotypes",
                                         gene))
    return diags


def _check_services(kb: KnowledgeBase) -> list[Diagnostic]:
    diags = []
    for service in kb.services:
        for key, template in service.prefetch.items():
            for token in _PREFETCH_TOKEN.findall(template):
                if not _KNOWN_TOKENS.match(token):
                    diags.append(kb.diag(service, f"service {service.id}: prefetch '{key}' uses unknown token "
                                                  f"'{{{{{token}}}}}'", "prefetch", key))
    return diags
