"""Every sentence a card says, written here and nowhere else, for any CommonMark client: every text we
did not write (CPIC's wording, anything from the request) is escaped (cds.mdescape); the summary is
never cut (≤139 characters: drug, result, action); the detail is short (result with date and lab, the
advice, classification, guideline and versions) and the long form is the SMART summary page behind the
card's `smart` link."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cds.knowledge.models import NO_RESULT, Flags, Guideline, Recommendation, Rule
from cds.mdescape import md_data, md_text
from cds.populations import population_dimension, population_words
from cds.sources import ATTRIBUTION as SOURCE_ATTRIBUTION
from cds.sources import KINDS, SOURCE_ORDER, disagreement, kind

from .model import (
    TOPIC_SYSTEM,
    ActionableResult,
    AffectedDrug,
    AssessedUninterpretable,
    Conflict,
    Differences,
    Headline,
    Notice,
    NotRetrieved,
    Statement,
    Unidentified,
    Uninterpretable,
    UnreachableKeys,
)
from .policy import CAUTION
from .statements import differences

if TYPE_CHECKING:
    from cds.dosing.calculate import DoseDecision, InputValue

SUMMARY_LIMIT = 139          # CDS Hooks: "<140-character summary"
ATTRIBUTION = ("CPIC guidelines (cpicpgx.org, CC0); PharmGKB/ClinPGx annotations (CC BY-SA 4.0). "
               "Decision support, not a substitute for clinical judgement.")
SMART_LINK_LABEL = "Open pharmacogenomic summary"
DETAIL_WORD_BUDGET = 120     # the detail's common case stays under this many words

# Action words when CPIC's own first sentence does not fit the summary: derived from the curators'
# flags only, so they say no more than the flags do; the detail has CPIC's words.
_FLAG_ACTIONS = {
    (True, True): "change of drug or dose advised",
    (True, False): "alternative drug advised",
    (False, True): "dosing advice",
    (False, False): "prescribing advice",
}
GENERIC_ACTIONS = frozenset(_FLAG_ACTIONS.values())


# --- summary ----------------------------------------------------------------------------------

def headline(drug: str, statements: list[Statement], results: list[str]) -> Headline:
    """The summary of a recommendation card: the first candidate that fits SUMMARY_LIMIT with every
    result named, else with the first result alone; never a cut word unless nothing fits at all."""
    carded = [s for s in statements if s.policy]
    differs = differences(statements)
    if differs.besides_source:
        candidates = _shared_actions(drug, statements, carded, differs)
    else:
        # one statement, or one per source: the most cautious one leads (CPIC on a tie), in the
        # site's wording when its rule has a summary, else in its source's first sentence
        lead = max(carded, key=_lead_order)
        templated = _templated(drug, lead, results)
        if templated is not None:
            return templated
        candidates = _lead_actions(drug, lead, differs)
    generic = flag_action([s.recommendation.flags for s in carded])
    if differs.besides_source:
        candidates.append(Headline(drug, (), generic, differs=differs, see_detail=True))
    candidates.append(Headline(drug, (), generic, see_detail=True))
    return _first_fitting(candidates, results)


def headline_text(h: Headline) -> str:
    if h.template is not None:
        return h.template
    head = f"{h.drug.capitalize()}: {'; '.join(h.results) or 'no result on file'}"
    if h.cut:
        return head[:SUMMARY_LIMIT - len(_SEE_DETAIL)] + _SEE_DETAIL
    action = (f"{h.whose}: " if h.whose else "") + h.action
    if h.differs is not None:
        action += f"; differs by {' and '.join(difference_words(h.differs, source=False))}"
    return f"{head} — {action}" + (_SEE_DETAIL if h.see_detail else "")


_SEE_DETAIL = " — see detail"


def _lead_order(s: Statement) -> tuple[int, int, int]:
    assert s.policy is not None
    return (CAUTION.get(s.policy.indicator, 0), KINDS[kind(s.recommendation)][0],
            -SOURCE_ORDER.get(s.match.guideline.source, 9))


def _templated(drug: str, lead: Statement, results: list[str]) -> Headline | None:
    """The site's wording, when the lead statement's rule has a summary template and it fits."""
    template = lead.policy.summary_template if lead.policy else None
    if not template:
        return None
    text = template_summary(template, drug, lead.recommendation, "; ".join(results) or "no result on file")
    # `cds validate` refuses a template whose filling would not fit, so this falls back only for results
    # no recommendation of the rule names (e.g. several genes' results together)
    return Headline(drug, tuple(results), template=text) if len(text) <= SUMMARY_LIMIT else None


def _lead_actions(drug: str, lead: Statement, differs: Differences) -> list[Headline]:
    """The lead statement's first sentence (with its source, when the card has several), or its first step."""
    whose = lead.match.guideline.source if differs.several else None
    sentence = first_sentence(lead.recommendation.recommendation)
    out = [Headline(drug, (), sentence, whose=whose)]
    step = leading_step(sentence)
    if step:
        out.append(Headline(drug, (), step, whose=whose, see_detail=True))
    return out


def _shared_actions(drug: str, statements: list[Statement], carded: list[Statement],
                    differs: Differences) -> list[Headline]:
    """CPIC's first sentence when it holds for every statement on the card; with the statements'
    difference named when it holds for those that raise the card."""
    every = {first_sentence(s.recommendation.recommendation) for s in statements}
    raising = {first_sentence(s.recommendation.recommendation) for s in carded}
    if len(every) == 1:
        sentence, named = every.pop(), None
    elif len(raising) == 1:
        sentence, named = raising.pop(), differs
    else:
        return []
    out = [Headline(drug, (), sentence, differs=named, see_detail=named is not None)]
    step = leading_step(sentence)
    if step:
        out.append(Headline(drug, (), step, differs=named, see_detail=True))
    return out


def _first_fitting(candidates: list[Headline], results: list[str]) -> Headline:
    for candidate in candidates:
        for named in (tuple(results), tuple(results[:1])):
            h = replace(candidate, results=named)
            if len(headline_text(h)) <= SUMMARY_LIMIT:
                return h
    return replace(candidates[-1], results=tuple(results[:1]), action="", see_detail=True, cut=True)


def result_name(gene: str, phenotype: str, allele_status: bool) -> str:
    """A result as a summary names it: "CYP2C19 Poor Metabolizer", "HLA-B*57:01 positive"."""
    return f"{gene}{phenotype}" if allele_status else f"{gene} {phenotype}"


# --- detail -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetailParts:
    head: list[str]                 # how the sources compare (when there are several), then a blank line
    advice: list[str]               # the advice, its classification and citation
    implications: str | None        # the implications line, shown when the detail stays within budget
    tail: list[str]                 # the pointer onward and the attribution
    words: int                      # words of all of the above


def detail(parts: DetailParts, facts: list[dict[str, Any]]) -> str:
    """The detail: how the sources compare, one line per result, the advice, its citation, the
    implications when the whole stays within DETAIL_WORD_BUDGET words, and the pointer onward."""
    results = list(dict.fromkeys(result_line(f) for f in facts))   # one line per result, however many scores
    lines = parts.head + results + [""] + parts.advice
    if parts.implications is not None and parts.words + sum(map(words, results)) <= DETAIL_WORD_BUDGET:
        return "\n".join(lines + ["", parts.implications] + parts.tail)
    return "\n".join(lines + parts.tail)


def detail_parts(statements: list[Statement], rule: Rule, has_app: bool, kb_version: str) -> DetailParts:
    """The parts of a detail that rest on the knowledge alone (everything but the result lines)."""
    sources = sorted({s.match.guideline.source for s in statements}, key=lambda x: SOURCE_ORDER.get(x, 9))
    head = _sources_compared(statements, sources) if len(sources) > 1 else []
    lines = _advice(statements) + ["", _citation(statements, rule, kb_version)]
    found = implications(statements)
    pointer = ("Implications, comments and every drug these results affect: "
               f"*{SMART_LINK_LABEL}*." if has_app else "Implications and comments: see the guideline link.")
    tail = ["", pointer, "", f"_{md_text(attribution(sources))}_"]
    implications_line = "**Implications:** " + " ".join(found) if found else None
    # words of everything but the result lines, with the implications (word counts add up line by line)
    count = sum(map(words, head + lines + tail + [implications_line or ""]))
    return DetailParts(head, lines, implications_line, tail, count)


def _sources_compared(statements: list[Statement], sources: Sequence[str]) -> list[str]:
    """How the sources compare, from the curators' flags (cds.sources), before their words."""
    kinds: dict[str, str] = {}
    for s in statements:
        k = kind(s.recommendation, s.policy is not None)
        if KINDS[k][0] >= KINDS[kinds.get(s.match.guideline.source, "none")][0]:
            kinds[s.match.guideline.source] = k
    differ = disagreement(kinds)
    names = " and ".join(sources)
    if differ:
        return [f"**{names} disagree in kind** — {differ}. The indicator follows the more cautious advice.", ""]
    return [f"**{names} agree in kind** — {KINDS[next(iter(kinds.values()))][1]}.", ""]


def _advice(statements: list[Statement]) -> list[str]:
    """The advice: one statement as its source wrote it, or each labelled, after what tells them apart."""
    if len(statements) == 1:
        s = statements[0]
        label = f" · {md_text(s.label)}" if s.label else ""
        lines = [f"**{s.match.guideline.source} advice** · classification: {classification(s)}{label}", "",
                 md_text(s.recommendation.recommendation, line_start=True)]
        if s.match.matched_by == "phenotype" and s.score is None:
            lines += ["", "_Matched by the reported phenotype: every activity score of this phenotype has this "
                          "advice._"]
        return lines
    lines = [_what_decides(differences(statements)), ""]
    for s in statements:
        lines.append(f"- **{md_text(s.label)}** (classification: {classification(s)}): "
                     f"{md_text(s.recommendation.recommendation, indent='  ')}")
    return lines


def _what_decides(differs: Differences) -> str:
    also = " and ".join(difference_words(differs, score=False, source=False, missing=False))
    if differs.missing:
        gene = " and ".join(differs.missing)
        return (f"**A {gene} result decides** — no {gene} result is on file, and the advice differs by it: the "
                f"advice for each {gene} result, most cautious first; order {gene} genotyping" +
                (f". It also differs by {also}, which the request does not say:" if also else ":"))
    if differs.score:
        return ("**The activity score decides** — the result gives the phenotype only, and the advice differs by "
                "score (most cautious first)" + (f"; it also differs by {also}, which the request does not say:"
                                                 if also else ":"))
    if also:
        return f"**The advice differs by {also}** — the request does not say which applies:"
    return "**Each source's advice:**"


def _citation(statements: list[Statement], rule: Rule, kb_version: str) -> str:
    guidelines = list({s.match.guideline.id: s.match.guideline for s in statements}.values())
    return (". ".join(f"{md_text(g.name)}: {cited(g)}; {md_text(g.version)}" for g in guidelines) + ". "
            f"{'Recommendations' if len(statements) > 1 else 'Recommendation'} "
            f"{', '.join(f'`{s.recommendation.id}`' for s in statements)}; rule `{rule.id}`; "
            f"knowledge base `{kb_version}`.")


def difference_words(differs: Differences, score: bool = True, source: bool = True,
                     missing: bool = True) -> list[str]:
    """What the statements differ by, in words ("activity score", "NUDT15 result", "age group", "source");
    `score`, `source`, `missing`: name those too."""
    if differs.unnamed:
        return ["recommendation"]
    named = [("activity score", score and differs.score),
             (" and ".join(differs.missing) + " result", missing and bool(differs.missing)),
             (population_dimension(set(differs.populations)) if differs.populations else "", bool(differs.populations)),
             ("source", source and differs.source)]
    return [name for name, shown in named if shown]


def implications(statements: list[Statement]) -> list[str]:
    seen: list[str] = []
    for s in statements:
        for gene, text in s.recommendation.implications.items():
            item = f"{md_text(gene)}: {md_text(text)}"
            if item not in seen:
                seen.append(item)
    return seen


def card_source(guideline: Guideline, rule: Rule, sources: Sequence[str] = ()) -> dict[str, Any]:
    sources = sources or [guideline.source]
    return {
        "label": " and ".join(sources) + " via pgx-cds" + (
            "" if "DPWG" not in sources else " (PharmGKB/ClinPGx, CC BY-SA 4.0)" if len(sources) == 1
            else " (DPWG: PharmGKB/ClinPGx, CC BY-SA 4.0)"),
        "url": guideline.url,
        "topic": {"system": TOPIC_SYSTEM, "code": rule.id, "display": rule.title},
    }


def classification(statement: Statement) -> str:
    rec = statement.recommendation
    if rec.classification:
        return rec.classification
    return "not graded (N/A in the PharmGKB export)" if statement.match.guideline.source == "DPWG" else "none"


def cited(guideline: Guideline) -> str:
    """The guideline's newest publication, or why there is none (some DPWG annotations list none)."""
    if not guideline.citations:
        return ("PharmGKB/ClinPGx guideline annotation (it lists no publication)" if guideline.source == "DPWG"
                else "no PMID in the source release")
    c = guideline.citations[0]
    return f"{c.year}, PMID {c.pmid}" if c.year else f"PMID {c.pmid}"


def attribution(sources: Sequence[str]) -> str:
    names = "; ".join(SOURCE_ATTRIBUTION.get(s, s) for s in sources)
    return (f"{names}; PharmGKB/ClinPGx annotations (CC BY-SA 4.0). Decision support, not a substitute for "
            "clinical judgement.")


def flag_action(flags: list[Flags | None]) -> str:
    alt = any(f is None or f.alternate_drug_available for f in flags)
    dose = any(f is None or f.dosing_information for f in flags)
    return _FLAG_ACTIONS[(alt, dose)]


def result_line(f: dict[str, Any]) -> str:
    if f["phenotype"] == NO_RESULT:
        return f"- {md_text(f['gene'])}: no result on file"
    parts = [f"- **{md_text(f['gene'])}**"]
    if f.get("diplotype"):
        parts.append(md_data(f["diplotype"]))
    parts.append(f"— **{md_text(f['phenotype'])}**")
    if f.get("activity_score") and f["activity_score"] != f["phenotype"]:
        parts.append(f"(activity score {md_text(f['activity_score'])})")
    if f.get("stated_as") == "phenotype" and f["lookup_key"] != f["phenotype"]:
        parts.append("(reported as phenotype)")
    return " ".join(parts + _provenance(f))


def _provenance(f: dict[str, Any]) -> list[str]:
    """Where a result comes from: its date, laboratory and source ids."""
    parts = []
    if f.get("date"):
        parts.append(f"· {f['date']}")          # ISO date we formatted ourselves
    if f.get("lab"):
        parts.append(f"· {md_data(f['lab'])}")
    if f.get("source_ids"):
        parts.append("· " + ", ".join(md_data(s) for s in f["source_ids"]))
    return parts


def statement_label(s: Statement) -> str:
    """What tells a statement apart from the card's others: "CPIC · Adults · if the CYP2D6 activity score is 1.0"."""
    parts = []
    if s.source:
        parts.append(s.source)
    if s.population:
        parts.append(population_words(s.population))
    if s.score is not None:
        gene = f"{s.score_gene} " if s.score_gene else ""
        parts.append(f"if the {gene}activity score is {s.score}")
    if s.missing_gene is not None:
        parts.append(f"if {s.missing_gene} is {s.missing_value}")
    return " · ".join(parts)


# --- notices ----------------------------------------------------------------------------------

def notice_words(notice: Notice, kb_version: str) -> tuple[str, str]:
    """A notice's summary and detail. Whatever they quote from the request is escaped here."""
    summary, detail = _NOTICE_WORDS[type(notice)](notice)
    summary = " ".join(summary.split())
    if len(summary) > SUMMARY_LIMIT:
        drug = f"{notice.drug.capitalize()}: " if notice.drug else ""
        summary = drug + "pharmacogenomic check incomplete — see detail"
    return summary, f"{detail}\n\nKnowledge base version `{kb_version}`."


def notice_source(code: str) -> dict[str, Any]:
    return {"label": "pgx-cds", "topic": {"system": TOPIC_SYSTEM, "code": code, "display": code.replace("-", " ")}}


def _conflict(n: Conflict) -> tuple[str, str]:
    genes, involved = ", ".join(n.genes), ", ".join(md_data(r) for r in n.results)
    if n.drug is None:
        return (f"Conflicting pharmacogenomic results on file: {genes}",
                "Current results for these genes disagree; no genotype-based advice is given for them until the "
                f"laboratory confirms one. Results involved: {involved}")
    return (f"{n.drug.capitalize()}: conflicting {genes} results on file — pharmacogenomic check not possible",
            "Two current results for the same gene disagree, so no genotype-based advice is given for it. "
            f"Results involved: {involved}. Ask the laboratory to confirm the result.")


def _uninterpretable(n: Uninterpretable) -> tuple[str, str]:
    genes, involved = ", ".join(n.genes), "; ".join(md_data(r) for r in n.results)
    if n.drug is None:
        return (f"Pharmacogenomic results on file could not be interpreted: {genes}",
                "These results are on file but could not be read or interpreted, so no advice rests on them. "
                f"Results involved: {involved}. Review them or ask the laboratory.")
    return (f"{n.drug.capitalize()}: {genes} result on file could not be interpreted — review it before prescribing",
            f"A {genes} result is on file for this patient but could not be interpreted, so no genotype-based "
            f"advice is given and no new test is suggested. Results involved: {involved}. Review the result or ask "
            "the laboratory before prescribing.")


def _assessed(n: AssessedUninterpretable) -> tuple[str, str]:
    return (f"{n.drug.capitalize()}: a pharmacogenomic result on file about it could not be interpreted — review "
            "it before prescribing",
            f"A result on file assesses {md_text(n.drug)}, but the gene it is about could not be told (it names none, "
            "and the result it is derived from is not available), so no genotype-based advice rests on it. Results "
            f"involved: {'; '.join(md_data(r) for r in n.results)}. Review the result or ask the laboratory before "
            "prescribing.")


def _unidentified(n: Unidentified) -> tuple[str, str]:
    named = " and ".join(n.named)
    return (f"Order could not be identified: its codes name {named} — pharmacogenomic check not done",
            f"The order \"{md_data(n.shown)}\" ({', '.join(md_data(c) for c in n.codes) or 'no code'}) names different "
            f"drugs ({named}), so it "
            "was not matched to either and no genotype-based advice was given. Check which drug is meant; "
            "the pharmacogenomic check runs when the order names one.")


def _not_retrieved(n: NotRetrieved) -> tuple[str, str]:
    if n.drug is None:
        return ("Pharmacogenomic summary could not be completed",
                f"The patient's pharmacogenomic results could not be retrieved ({md_data(n.reason)}).")
    return (f"{n.drug.capitalize()}: pharmacogenomic check could not be completed",
            f"The patient's pharmacogenomic results could not be retrieved ({md_data(n.reason)}). "
            "No genotype-based advice was given; check the results before prescribing.")


def _unreachable(n: UnreachableKeys) -> tuple[str, str]:
    g, results = n.guideline, "; ".join(n.results)
    return (f"{n.drug.capitalize()}: {results} — {g.source} advice could not be matched to this result; see the "
            "guideline",
            f"The {g.source} guideline [{md_text(g.name)}]({g.url}) has advice for {n.drug} by {', '.join(n.genes)}, "
            f"but none of it could be matched to this result ({md_data(results)}): some of its recommendations are "
            "keyed in a way our gene tables cannot produce:\n\n" + "\n".join(f"- {md_text(r)}" for r in n.reasons)
            + f"\n\nRead the guideline before prescribing. Rule `{n.rule_id}`.")


_NOTICE_WORDS: dict[type, Callable[[Any], tuple[str, str]]] = {
    Conflict: _conflict, Uninterpretable: _uninterpretable, AssessedUninterpretable: _assessed,
    Unidentified: _unidentified,
    NotRetrieved: _not_retrieved, UnreachableKeys: _unreachable,
}


# --- patient-view -----------------------------------------------------------------------------

def patient_summary_source() -> dict[str, Any]:
    return {"label": "CPIC via pgx-cds", "url": "https://cpicpgx.org/guidelines/",
            "topic": {"system": TOPIC_SYSTEM, "code": "patient-summary", "display": "Pharmacogenomic summary"}}


def patient_summary(results: list[ActionableResult], drugs: list[str]) -> str:
    """The actionable results, then the drugs they affect, as many as fit."""
    names = [result_name(r.gene, r.interpretation.phenotype, r.allele_status) for r in results]
    summary = fit_list("Pharmacogenomic results to act on: ", names) if names else \
        "Active medications affected by pharmacogenomic results"
    if not drugs:
        return summary
    longer = f"{summary}; affects {', '.join(drugs)}"
    if len(longer) <= SUMMARY_LIMIT:
        return longer
    return fit_list(summary + "; affects ", drugs) if len(summary) + 20 <= SUMMARY_LIMIT else summary


def patient_detail(results: list[ActionableResult], affected: list[AffectedDrug], kb_version: str) -> str:
    lines = ["**Actionable pharmacogenomic results**", ""] + [line for r in results for line in _actionable_lines(r)]
    if affected:
        lines += ["", "**Active medications affected**", ""]
        lines += [_affected_line(a.drug, s) for a in affected for s in a.statements if s.policy]
    shown_sources = sorted({s.match.guideline.source for a in affected for s in a.statements} or {"CPIC"},
                           key=lambda x: SOURCE_ORDER.get(x, 9))
    lines += ["", f"Knowledge base version `{kb_version}`.", "", f"_{md_text(attribution(shown_sources))}_"]
    return "\n".join(lines)


def _actionable_lines(r: ActionableResult) -> list[str]:
    interp = r.interpretation
    diplotype = f"{md_data(interp.diplotype)} " if interp.diplotype else ""
    lines = [f"- **{md_text(r.gene)}** {diplotype}— {md_text(interp.phenotype)}"]
    if r.consultation:
        lines.append(f"  - {md_text(r.consultation, indent='    ')}")
    return lines


def _affected_line(drug: str, s: Statement) -> str:
    label = f" ({md_text(s.label)})" if s.label else ""
    g = s.match.guideline
    return (f"- **{md_text(drug)}**{label}: {md_text(s.recommendation.recommendation, indent='  ')} "
            f"([{g.source}]({g.url}), {classification(s)})")


# --- pre-test alerts --------------------------------------------------------------------------

def genetic_test_name(gene: str, display: str | None) -> str:
    return display or f"{gene} genotyping"


def pretest_filled(drug: str, gene: str, test: str, template: str | None) -> str:
    """A pre-test summary template filled in (`cds validate` checks every filling fits)."""
    template = template or "{Drug}: no {gene} result on file — order {test} before prescribing"
    return " ".join(template.format(Drug=drug.capitalize(), drug=drug, gene=gene, test=test).split())


def pretest_summary(drug: str, gene: str, test: str, template: str | None) -> str:
    summary = pretest_filled(drug, gene, test, template)
    if len(summary) > SUMMARY_LIMIT:
        return f"{drug.capitalize()}: no {gene} result on file — test before prescribing"
    return summary


def pretest_detail(drug: str, gene: str, guideline: Guideline | None, rule_id: str, kb_version: str) -> str:
    lines = [f"No {gene} result is on file for this patient. The drug label requires (or CPIC "
             f"recommends) {gene} testing before {drug} is prescribed.", ""]
    if guideline:
        lines.append(f"**Guideline:** [{md_text(guideline.name)}]({guideline.url}).")
    lines += [f"Rule `{rule_id}`; knowledge base version `{kb_version}`.", "", f"_{md_text(ATTRIBUTION)}_"]
    return "\n".join(lines)


def local_policy_source() -> dict[str, Any]:
    return {"label": "pgx-cds local policy"}

PRETEST_GUIDELINE_LINK = "CPIC guideline"


# --- links and suggestions --------------------------------------------------------------------

ANNOTATION_LINK = "PharmGKB guideline annotation"


def guideline_link(g: Guideline) -> str:
    return f"{g.source} guideline: {g.name.removeprefix(g.source + ' Guideline for ')}"


def replace_label(drug: str, alternative: str, replaces: bool, whose: str | None) -> str:
    """A suggestion's label; `whose`: the population whose advice it follows, when the statements differ by it."""
    label = f"Replace {drug} with {alternative}" if replaces else f"Order {alternative} instead of {drug}"
    return label + (f" — advice for {whose}" if whose else "")


def create_description(name: str, dose: str | None = None) -> str:
    return f"Create a draft order for {name}" + (f" with CPIC's dosing advice for this result: {dose}" if dose else "")


def remove_description(drug: str) -> str:
    return f"Remove the draft order for {drug}"


def order_test_label(test: str) -> str:
    return f"Order {test}"


# --- CPIC's sentences -------------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.;])\s+(?=[A-Z(])")


def template_summary(template: str, drug: str, rec: Recommendation, results: str) -> str:
    """A rule's summary template filled in for one recommendation and the results it rests on."""
    return " ".join(template.format(Drug=drug.capitalize(), drug=drug, results=results,
                                    action=first_sentence(rec.recommendation), population=rec.population,
                                    classification=rec.classification or "").split())


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(" ".join(text.split())) if s]


def first_sentence(text: str) -> str:
    first = sentences(text)
    return first[0].rstrip(".;") if first else ""


# Connectors after which CPIC's sentence only adds a later step to the first one ("Reduce starting dose
# by 50% followed by titration …", "Prescribe ≤20mg as a starting dose and adjust doses …"): the words
# before them are the first step as CPIC wrote it, so they can stand in a summary on their own.
_LATER_STEP = re.compile(r"\s(?:followed by|and adjust|and titrate|then)\s")


def leading_step(sentence: str) -> str | None:
    parts = _LATER_STEP.split(sentence, maxsplit=1)
    lead = parts[0].rstrip(",;: ")
    if len(parts) == 1 or len(lead.split()) < 3 or "," in lead:
        return None
    return lead


def words(markdown: str) -> int:
    return len(re.findall(r"[^\s*_`\\-]+", markdown))


def fit_list(prefix: str, items: list[str], limit: int = SUMMARY_LIMIT) -> str:
    """prefix + as many items as fit, then "and N more" — never a cut word."""
    for n in range(len(items), 0, -1):
        rest = len(items) - n
        text = prefix + ", ".join(items[:n]) + (f" and {rest} more" if rest else "")
        if len(text) <= limit:
            return text
    return prefix.rstrip(": ;") + f": {len(items)}"


# --- dose cards (cds/dosing: warfarin's IWPC estimate) ------------------------------------------------
# With an estimate: the weekly and daily dose, every input with its date and resource, the flow chart's
# statements that apply, the guideline's caveats and the citations. Without one: every missing input named
# and the flow chart's text instead of a number.

DOSE_INPUT_WORDS = {"age_decades": "Age", "height_cm": "Height", "weight_kg": "Weight", "race": "Race group (IWPC)",
                    "VKORC1": "VKORC1", "CYP2C9": "CYP2C9", "amiodarone": "Amiodarone",
                    "enzyme_inducer": "Enzyme inducers (carbamazepine, phenytoin, rifampin)"}


def _weekly_text(mg: float) -> str:
    return f"{mg:.1f} mg/week"


def _daily_text(mg: float) -> str:
    return f"{mg / 7:.1f} mg/day"


def dose_summary(decision: DoseDecision) -> str:
    drug = decision.algorithm.drug.capitalize()
    genotype = ", ".join(f"{i.name} {i.value}" for i in decision.inputs
                         if i.name in ("CYP2C9", "VKORC1") and i.value is not None)
    cautions = [s for s in decision.steps if s.action == "caution"]
    if decision.weekly_mg is None:
        missing = [DOSE_INPUT_WORDS.get(i.name, i.name).lower() for i in decision.missing]
        if missing:
            text = f"{drug}: no genotype-guided dose — missing {', '.join(dict.fromkeys(missing))}; see CPIC flow chart"
        else:
            text = f"{drug}: dose by CPIC's flow chart, no genotype-guided estimate here — see detail"
        return _fit_summary(text, f"{drug}: no genotype-guided dose — see detail")
    dose = _dose_words(decision)
    text = f"{drug}: IWPC estimate {dose} ({genotype})"
    if any(s.id.startswith("cyp2c9-poor") for s in cautions):
        text += " — consider an alternative agent"
    return _fit_summary(text, f"{drug}: IWPC estimate {dose} — see detail")


def _dose_words(decision: DoseDecision) -> str:
    weekly = decision.weekly_mg or 0.0
    if decision.weekly_range_mg:
        low, high = decision.weekly_range_mg
        return f"{low:.1f}–{high:.1f} mg/week"
    return f"{_weekly_text(weekly)} ({_daily_text(weekly)})"


def _fit_summary(text: str, shorter: str) -> str:
    return text if len(text) <= SUMMARY_LIMIT else shorter[:SUMMARY_LIMIT]


def dose_detail(decision: DoseDecision, kb: Any, rule_id: str | None) -> str:
    a = decision.algorithm
    guideline = kb.guidelines.get(a.guideline)
    lines = []
    if decision.weekly_mg is not None:
        lines.append(f"**Estimated stable maintenance dose ({md_text(a.name)}): {_dose_words(decision)}**")
        if decision.weekly_range_mg:
            lines.append(f"Before the flow chart's adjustment: {_weekly_text(decision.weekly_mg)}.")
    else:
        lines.append(f"**{md_text(a.unavailable_text)}**")
        lines.append("Why:\n\n" + "\n".join(f"- {md_data(w)}" for w in decision.withheld))
    lines.append("**Inputs**\n\n" + "\n".join(_dose_input_line(i) for i in decision.inputs))
    statements = [s for s in decision.steps if s.action != "dose-clinically"]
    if statements:
        lines.append("**CPIC flow chart**\n\n" + "\n".join(
            f"- {md_text(s.text)}" + (f" ({md_text(s.classification)})" if s.classification else "")
            + f" — {md_text(s.source)}" for s in statements))
    lines.append("**Caveats**\n\n" + "\n".join(f"- {md_text(c)}" for c in a.caveats))
    lines.append(_dose_sources(decision, guideline.reference() if guideline else None, rule_id))
    return "\n\n".join(lines)


def _dose_input_line(i: InputValue) -> str:
    what = DOSE_INPUT_WORDS.get(i.name, i.name)
    if i.value is None:
        return f"- {what}: **missing** — {md_data(i.missing or i.shown)}"
    where = f" — {md_data(i.source)}" if i.source else ""
    return f"- {what}: {md_data(i.shown)}{where}"


def _dose_sources(decision: DoseDecision, guideline_ref: str | None, rule_id: str | None) -> str:
    a = decision.algorithm
    checks = "; ".join(f"{md_text(c.name)} (commit {c.commit[:7]})" for c in a.cross_checks)
    parts = [f"Algorithm: {md_text(a.citation.text())}; coefficients checked against {checks}.",
             f"Flow chart: {md_text(a.flow_source)}."]
    if guideline_ref:
        parts.append(f"Guideline: {md_text(guideline_ref)}.")
    parts.append(f"Dosing file `{a.id}`" + (f", rule `{md_text(rule_id)}`" if rule_id else "") + ".")
    return " ".join(parts)
