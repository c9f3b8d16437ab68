"""The rules engine: compiled match plans registered with durable-rules, evaluated per request.

One durable-rules ruleset per drug, so an evaluation touches only the rulesets of the drugs ordered
and its cost does not grow with the size of the knowledge base. Each evaluation asserts one fact per
drug under a fresh session id and deletes that session's state afterwards; a lock serialises access
to the engine, whose C core keeps per-ruleset state that is not safe to share between threads.
"""
from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

import durable_rules_engine
import orjson
from durable import engine as durable_engine

from cds.compiler import CompiledKnowledge, DrugPlan, MatchPlan, PreTestPlan, compile_knowledge
from cds.errors import CdsError
from cds.genotype import OTHER_GENOTYPE, Interpretation, describe, disagree, genotype_key, parse_score
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT, Guideline, Recommendation, Rule
from cds.memo import Memo

_engine_ids = itertools.count(1)
# durable-rules' C core keeps its rulesets in process-wide tables: registering, asserting into and
# deleting rulesets are serialised across every Engine of the process, so a new policy's engine can be
# built and warmed in a background thread while requests evaluate on the engine it replaces.
_DURABLE = threading.Lock()
# Every fact carries this marker and every ruleset has a rule that matches it. durable-rules 2.0.28
# crashes (double free) when the state of a session whose fact no rule matched is deleted, and never
# frees that state otherwise; with the marker rule every fact is handled and its state can be deleted.
_MARKER = ("pgx_fact", "drug-order")
STATED_ORDER = {"diplotype": 0, "activity score": 1, "allele status": 2, "phenotype": 3}   # most specific first


def _ignore(_closure) -> None:
    return None


class _DurableJson:
    """durable-rules' Python side passes every fact, session state and action message to its C core as
    JSON text, with the stdlib's json (three dumps and loads per action it runs); orjson, the
    service's JSON library already, writes and reads the same JSON several times faster."""

    @staticmethod
    def dumps(value, ensure_ascii: bool = False) -> str:
        return orjson.dumps(value).decode()

    loads = staticmethod(orjson.loads)


durable_engine.json = _DurableJson


class _Host(durable_engine.Host):
    """A durable-rules host without its background dispatch threads: every action we register runs
    synchronously inside assert_fact, and the timer threads would only burn CPU (and race us)."""

    def _run(self) -> None:
        return None


@dataclass(frozen=True)
class Match:
    drug: str
    guideline: Guideline
    recommendation: Recommendation
    matched_by: str                       # "lookup", "phenotype", "implied phenotype", "missing result" (cds.compiler)
    # A phenotype reported without its activity score, where CPIC's advice differs between the scores
    # of that phenotype: the score (of `score_gene`) this recommendation is CPIC's advice for. The
    # drug then has one such match per score, most cautious first (see `caution_order`).
    score: str | None = None
    score_gene: str | None = None
    # A gene the recommendation's key needs has no result on file and the source has no "No Result" key for
    # it: the value of that gene this recommendation is the advice for. The drug then has one match per
    # value, most cautious first, and a result for that gene decides (cds.compiler._missing_partner_aliases).
    missing_gene: str | None = None
    missing_value: str | None = None


@dataclass(frozen=True)
class PreTestAlert:
    drug: str
    gene: str
    rule: Rule


@dataclass
class DrugEvaluation:
    drug: str
    rxnorm: str | None                                  # None: the sources give none (matched by name)
    facts: dict[str, str]                               # the fact asserted: attribute → lookup value
    matches: list[Match] = field(default_factory=list)
    pretests: list[PreTestAlert] = field(default_factory=list)
    rules: dict[str, Rule] = field(default_factory=dict)  # hook → governing CDS rule


@dataclass
class Evaluation:
    interpretations: dict[str, list[Interpretation]]
    drugs: list[DrugEvaluation]
    population: str | None = None
    # gene → the results that disagree (described, or their source ids): no genotype-based advice for it
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    # gene → why its results could not be read (cds.genotype.Interpretation.unreadable): no advice for it
    unreadable: dict[str, list[str]] = field(default_factory=dict)

    def undecided_scores(self, drug: DrugEvaluation) -> dict[str, list[str]]:
        """Genes reported as a phenotype only whose activity score decides between the drug's
        recommendations: gene → the scores shown, in the order of the matches."""
        out: dict[str, list[str]] = {}
        for m in drug.matches:
            if m.score is not None and m.score_gene is not None and m.score not in out.setdefault(m.score_gene, []):
                out[m.score_gene].append(m.score)
        return out

    def missing_results(self, drug: DrugEvaluation) -> dict[str, list[str]]:
        """Genes with no result on file whose value decides between the drug's recommendations (the
        source has no "No Result" key for them): gene → the values shown, in the order of the matches."""
        out: dict[str, list[str]] = {}
        for m in drug.matches:
            if m.missing_gene is not None and m.missing_value is not None \
                    and m.missing_value not in out.setdefault(m.missing_gene, []):
                out[m.missing_gene].append(m.missing_value)
        return out


_CLASSIFICATION_RANK = {"Strong": 0, "Moderate": 1, "Optional": 2, "No Recommendation": 3}


def caution_order(match: Match) -> tuple:
    """Sort key, most cautious first, for the recommendations a phenotype without its score stands for:

    1. what the curators flag: an alternative drug with classification Strong; an alternative drug;
       a dose change; other prescribing guidance; no flags in the source (unknown, so not last);
       nothing flagged (use as usual);
    2. CPIC's classification: Strong, Moderate, Optional, No Recommendation, none;
    3. the lower activity score ("≥X" counts as X, after an exact X).
    E.g. DPYD Poor Metabolizer and fluorouracil: score 0.0 ("avoid", alternative flagged, Strong)
    before 0.5 ("avoid; if no alternative, a strongly reduced dose", alternative flagged, Strong)."""
    rec = match.recommendation
    flags = rec.flags
    if flags is None:
        tier = 4
    elif flags.alternate_drug_available:
        tier = 0 if rec.classification == "Strong" else 1
    elif flags.dosing_information:
        tier = 2
    elif flags.other_prescribing_guidance:
        tier = 3
    else:
        tier = 5
    score = parse_score(match.score) if match.score is not None else None
    return (tier, _CLASSIFICATION_RANK.get(rec.classification or "", 4),
            score if score is not None else (0, False), value_caution(match.missing_value))


# Between statements for a missing gene's values that the flags and classification do not order: the
# value furthest from normal function first (CPIC's phenotype terms: poor/deficient, then likely poor,
# intermediate/decreased, possible/likely intermediate, … normal, rapid/increased, ultrarapid), so equally
# flagged advice reads from the most to the least affected; Indeterminate last.
_VALUE_WORDS = [("indeterminate", 9), ("ultrarapid", 8), ("rapid", 7), ("increased", 7), ("normal", 6),
                ("possible", 3), ("likely intermediate", 3), ("likely poor", 1), ("intermediate", 2),
                ("decreased", 2), ("poor", 0), ("deficient", 0), ("positive", 0), ("negative", 6)]


def value_caution(value: str | None) -> int:
    if value is None:
        return 0
    folded = value.casefold()
    return next((rank for word, rank in _VALUE_WORDS if word in folded), 5)


def _match_order(match: Match) -> tuple:
    rec = match.recommendation
    if match.score is None and match.missing_gene is None:
        return (rec.population, 0, (), rec.id)
    return (rec.population, 1, caution_order(match), rec.id)


def withhold_conflicting(evaluation: Evaluation, genes) -> None:
    """No genotype-based advice for a gene whose results conflict (or could not be read): neither its
    "No Result" recommendations nor the advice for each value a missing result could have (the engine saw
    it as "No Result", but a result is on file), nor a pre-test alert for it."""
    genes = set(genes)
    for drug in evaluation.drugs:
        drug.matches = [m for m in drug.matches if m.missing_gene not in genes
                        and not any(g in genes and v == NO_RESULT for g, v in m.recommendation.lookup.items())]
        drug.pretests = [p for p in drug.pretests if p.gene not in genes]


class Engine:
    """Compiled knowledge, registered once; `evaluate` is the hot path."""

    def __init__(self, compiled: CompiledKnowledge):
        self.compiled = compiled
        self.kb = compiled.kb
        self._lock = _DURABLE
        self._closed = False
        self._fired: list[MatchPlan | PreTestPlan] = []
        self._session_ids = itertools.count(1)
        self._memo: Memo[tuple] | None = None      # see memoize()
        self.memoize()
        self._host = _Host()
        prefix = f"e{next(_engine_ids)}_"
        self._ruleset_names: dict[str, str] = {}
        definitions = {}
        for plan in compiled.drugs.values():
            if not plan.matches and not plan.pretests:
                continue  # e.g. warfarin: CPIC gives a dosing algorithm, not lookup recommendations
            name = prefix + plan.ruleset
            self._ruleset_names[plan.drug] = name
            definitions[name] = self._ruleset(plan)
        with self._lock:
            self._host.register_rulesets(definitions)
        self._warm_up()
        from cds.sources import policy_sources
        # Guideline sources whose matches evaluate() returns unless told otherwise: every source some rule of
        # the site's policy selects (CPIC alone by default), so a DPWG-off site sees exactly its CPIC answers.
        self.sources: tuple[str, ...] = policy_sources(self.kb)

    @classmethod
    def from_knowledge(cls, kb: KnowledgeBase) -> Engine:
        return cls(compile_knowledge(kb))

    def _ruleset(self, plan: DrugPlan) -> dict:
        # One durable-rules rule per distinct condition: a phenotype reported without its score selects
        # several recommendations (one per score) under the same condition, and one rule that records
        # them all costs the engine no more than the single rule it replaced.
        by_condition: dict[tuple, list[MatchPlan | PreTestPlan]] = {}
        for target in list(plan.matches) + list(plan.pretests):
            by_condition.setdefault(tuple(sorted(target.conditions.items())), []).append(target)
        rules = {}
        for i, (condition, targets) in enumerate(by_condition.items()):
            conditions = [{attr: value} for attr, value in condition]
            test = conditions[0] if len(conditions) == 1 else {"$and": conditions}
            rules[f"r{i}"] = {"all": [{"m": test}], "run": self._recorder(targets)}
        rules["handled"] = {"all": [{"m": {_MARKER[0]: _MARKER[1]}}], "run": _ignore}
        return rules

    def _recorder(self, targets: list[MatchPlan | PreTestPlan]):
        fired = self._fired

        def record(_closure) -> None:
            fired.extend(targets)
        return record

    def _warm_up(self) -> None:
        # durable-rules registers a ruleset lazily on first use and fails under concurrent first use,
        # so touch every ruleset once before serving.
        for plan in self.compiled.drugs.values():
            self._assert(plan, {attr: NO_RESULT for attr in plan.attributes})

    def close(self) -> None:
        """Free this engine's rulesets in durable-rules (an engine replaced by a newer policy, once no call
        can still be using it). The engine must not be evaluated afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for name in self._ruleset_names.values():
                ruleset = self._host._ruleset_directory.pop(name, None)   # durable-rules has no public delete
                if ruleset is not None:
                    durable_rules_engine.delete_ruleset(ruleset._handle)
            self._ruleset_names.clear()
            if self._memo is not None:
                self._memo = Memo(1)

    def memoize(self, max_entries: int = 100_000) -> None:
        """Remember what fired for each (drug, asserted values). The values are the knowledge base's own
        lookup keys (phenotypes, activity scores, allele statuses), so a few hundred combinations recur
        across every patient a service or a screening run sees; durable-rules decides each combination
        once. Compiled rules never change, so a remembered answer cannot go stale; the table is bounded
        (`max_entries`, then new combinations are asserted every time; 0: assert every evaluation).
        On from construction."""
        self._memo = Memo(max_entries) if max_entries else None

    def _assert(self, plan: DrugPlan, values: dict[str, str]) -> list[MatchPlan | PreTestPlan]:
        name = self._ruleset_names.get(plan.drug)
        if name is None:
            return []
        if self._memo is None:
            return self._assert_now(name, values)
        key = (name, tuple(sorted(values.items())))
        return list(self._memo.get(key, lambda: tuple(self._assert_now(name, values))))

    def _assert_now(self, name: str, values: dict[str, str]) -> list[MatchPlan | PreTestPlan]:
        sid = self._new_session_id()
        with self._lock:
            self._fired.clear()
            try:
                self._host.assert_fact(name, {"sid": sid, _MARKER[0]: _MARKER[1], **values})
            finally:
                self._host.delete_state(name, sid)
            return list(self._fired)

    def _new_session_id(self) -> str:
        # Unique within the process is all a session id needs (its state lives and dies in this call).
        return f"{os.getpid()}-{next(self._session_ids)}"

    def session_exists(self, drug: str, sid: str) -> bool:
        """Whether durable-rules still holds state for a session (evaluations must leave none)."""
        try:
            self._host.get_state(self._ruleset_names[drug], sid)
            return True
        except Exception:  # durable-rules raises a bare Exception ("Could not get state, error code: 309")
            return False

    # --- the request path -------------------------------------------------------------------------

    def drug_plan(self, drug: str) -> DrugPlan | None:
        """Find a drug by ingredient name (any case) or RxNorm ingredient code."""
        compiled = self.compiled
        return compiled.drugs.get(drug) or compiled.drugs.get(drug.lower()) or compiled.by_rxnorm.get(drug)

    def evaluate(self, genotypes: Mapping[str, Iterable[Interpretation]], drugs: Iterable[str],
                 population: str | None = None, conflicts: Mapping[str, list[str]] | None = None,
                 sources: Iterable[str] | None = None, day: date | None = None) -> Evaluation:
        """Match the patient's interpreted results against the recommendations for each drug.

        `genotypes`: gene → its interpretations (several may agree, e.g. HLA alleles or a diplotype and
        a phenotype). Interpretations of one gene that disagree (cds.genotype.disagree, the check the
        FHIR pipeline makes) are a conflict: the gene counts as "No Result", its recommendations and
        pre-test alerts are withheld, and `Evaluation.conflicts` names it, as it does the genes in
        `conflicts` (found earlier, e.g. by the FHIR pipeline; gene → the results involved).
        `day`: the date whose rules are in force (effective_from/until; default today).
        Unknown drugs raise CdsError."""
        conflicting = dict(conflicts or {})
        interpretations: dict[str, list[Interpretation]] = {}
        unreadable: dict[str, list[str]] = {}
        for gene, items in genotypes.items():
            items = sorted(items, key=lambda i: STATED_ORDER.get(i.stated_as, 9))
            if len(items) > 1 and disagree(items):
                conflicting[gene] = [describe(i) for i in items]
            elif gene not in conflicting:
                interpretations[gene] = items
                if all(i.unreadable for i in items):
                    unreadable[gene] = [i.reason or "not a result CPIC's tables define" for i in items]
        patient: dict[str, str] = {}
        for items in interpretations.values():
            for interp in reversed(items):  # the most specific statement wins
                if not interp.unreadable:   # a result we could not read is no CPIC key: no advice rests on it
                    patient.update(interp.lookup)
        # each gene's genotype, for recommendations keyed by genotype (the first diplotype statement)
        genotype_keys = {gene: genotype_key(next(i.alleles for i in items if i.alleles and not i.unreadable))
                     for gene, items in interpretations.items() if any(i.alleles and not i.unreadable for i in items)}
        results = []
        wanted_sources = set(self.sources if sources is None else sources)
        day = day or date.today()
        for drug in drugs:
            plan = self.drug_plan(drug)
            if plan is None:
                raise CdsError(f"unknown drug '{drug}': no guideline in the knowledge base covers it")
            facts = {attr: patient.get(attr, NO_RESULT) for attr in plan.attributes}
            for attr, keyed in plan.genotype_keys.items():
                genotype = genotype_keys.get(plan.attributes[attr])
                facts[attr] = genotype if genotype in keyed else OTHER_GENOTYPE
            fired = self._assert(plan, facts)
            evaluation = DrugEvaluation(plan.drug, plan.rxnorm, facts, rules=plan.rules_on(day))
            governing = {id(r) for r in evaluation.rules.values()}
            wanted = population if population in plan.populations else None
            for target in fired:
                if isinstance(target, PreTestPlan):
                    if id(target.rule) in governing:
                        evaluation.pretests.append(PreTestAlert(plan.drug, target.gene, target.rule))
                elif target.guideline.source not in wanted_sources:
                    continue
                elif wanted is None or target.recommendation.population == wanted or target.guideline.source == "DPWG":
                    evaluation.matches.append(Match(plan.drug, target.guideline, target.recommendation,
                                                    target.matched_by, target.score, target.score_gene,
                                                    target.missing_gene, target.missing_value))
            evaluation.matches.sort(key=_match_order)
            results.append(evaluation)
        outcome = Evaluation(interpretations, results, population, conflicting, unreadable)
        if conflicting or unreadable:
            # a result is on file: neither "no result" advice nor a test-first alert for these genes
            withhold_conflicting(outcome, set(conflicting) | set(unreadable))
        return outcome
