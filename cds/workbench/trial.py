""""Try a patient": the cards the service would return, from typed results or a pasted CDS Hooks request.

Typed results go through the same steps as `cds test` (parse → engine → card renderer). A pasted
request goes through the service's own path (parse_hook_request, then the decision core's `decide`:
consent, order reading, FHIR result reading, engine, cards), with one difference said on the page:
the workbench reads the request's prefetch only and never contacts the FHIR server it names.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from cds.cards import RenderedCard
from cds.cdshooks import Gathered, RequestError, case_from_hook, next_link, parse_hook_request, prefetch_problem
from cds.decision import decide  # the service's own decision path, so the two cannot drift
from cds.dosing.advice import dosing_keys_not_needed, stated_dose_cards
from cds.engine import Evaluation
from cds.errors import CdsError
from cds.explain import parse_genotype_args
from cds.facts import MedicationOrder
from cds.memo import Memo
from cds.pipeline import PatientFacts

FORM_HOOKS = ("order-select", "order-sign", "patient-view")
MAX_PASTE = 2_000_000          # characters; a hook request with a patient's results is far smaller
_DRUG_SEPARATORS = re.compile(r"[,\n;]+")


@dataclass
class Trial:
    hook: str
    cards: list[RenderedCard]
    evaluation: Evaluation | None
    facts: PatientFacts | None = None                       # pasted requests: what was read from FHIR
    orders: list[MedicationOrder] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)          # what differs from a live call
    consent: str | None = None
    service_id: str | None = None
    pharmcat: dict[str, Any] | None = None                  # an uploaded PharmCAT file: its calls as PharmCAT made them


def split_drugs(text: str) -> list[str]:
    return [d.strip() for d in _DRUG_SEPARATORS.split(text or "") if d.strip()]


def split_genotypes(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


MAX_UPLOAD = 50_000_000        # bytes; PharmCAT's report.json for one sample is a few MB


def from_pharmcat(runtime, raw: bytes, name: str, drugs: list[str], hook: str, population: str | None) -> Trial:
    """Cards for a PharmCAT output file (phenotype.json, report.json or outside-call TSV), its calls read
    as PharmCAT made them (cds.pharmcat), as `cds explain --pharmcat` reads them."""
    from cds.pharmcat.interpret import interpret_calls
    from cds.pharmcat.present import results_json
    from cds.pharmcat.read import parse_pharmcat

    if not raw:
        raise CdsError("choose a PharmCAT file (*.phenotype.json, *.report.json or an outside-call TSV) first")
    if len(raw) > MAX_UPLOAD:
        raise CdsError(f"the file is {len(raw):,} bytes; the workbench reads at most {MAX_UPLOAD:,}")
    reading = interpret_calls(runtime.engine.kb.interpreters, parse_pharmcat(raw, name or "the file"))
    trial = from_results(runtime, [], drugs, hook, population, statements=reading.interpretations)
    trial.pharmcat = results_json(reading.results, reading.notes)
    return trial


def from_results(runtime, genotype_lines: list[str], drugs: list[str], hook: str,
                 population: str | None, clinical: dict[str, str] | None = None,
                 statements: dict | None = None) -> Trial:
    """Cards for results typed as `GENE=VALUE` lines (the syntax of `cds explain` and rule tests);
    `statements`: results already read (a PharmCAT file), beside the typed ones."""
    if hook not in FORM_HOOKS:
        raise CdsError(f"hook must be one of {', '.join(FORM_HOOKS)}, not {hook!r}")
    engine, renderer = runtime.engine, runtime.advisor.renderer
    if not drugs and hook != "patient-view":
        raise CdsError("enter at least one drug (ingredient name or RxNorm ingredient code)")
    genotypes = parse_genotype_args(engine, genotype_lines)
    for gene, items in (statements or {}).items():
        genotypes.setdefault(gene, []).extend(items)
    plans = []
    for drug in drugs:
        plan = engine.drug_plan(drug)
        if plan is None:
            raise CdsError(f"unknown drug '{drug}': no guideline in the knowledge base covers it")
        plans.append(plan)
    if population:
        offered = sorted({p for plan in plans for p in plan.populations})
        if population not in offered:
            raise CdsError(f"population '{population}' is not one the guidelines of "
                           f"{', '.join(p.drug for p in plans) or 'these drugs'} use "
                           f"(they use: {', '.join(offered) or 'none'})")
    evaluation = engine.evaluate(genotypes, [p.drug for p in plans], population or None)
    if hook == "patient-view":
        cards = renderer.patient_summary(evaluation.interpretations, evaluation, app_url=smart_page_url())
    else:
        cards = renderer.order_cards(evaluation, hook, population=population or None, app_url=smart_page_url())
    # contradicting lines for one gene are a conflict, said in a card as the service says it
    cards += runtime.advisor.conflict_cards(hook, evaluation)
    if hook != "patient-view":   # a typed result that is no CPIC key, said as the service says it (and cds test)
        cards += runtime.advisor.renderer.notices.uninterpretable_cards(hook, evaluation, evaluation.unreadable)
    if hook != "patient-view":      # a drug with a dosing algorithm (warfarin): its dose, from the stated inputs
        cards += stated_dose_cards(runtime.advisor, evaluation, hook, *_clinical(clinical or {}))
    return Trial(hook, cards, evaluation)


def _clinical(form: dict[str, str]) -> tuple[int | None, float | None, float | None, str | None, list[str] | None]:
    """The try-a-patient form's clinical inputs: age, height (cm), weight (kg), race group, medications
    (comma-separated names; empty: not stated)."""
    def number(name: str, kind):
        text = (form.get(name) or "").strip()
        if not text:
            return None
        try:
            return kind(text)
        except ValueError:
            raise CdsError(f"{name} must be a number, not {text!r}") from None

    race = (form.get("race") or "").strip() or None
    if race not in (None, "white", "asian", "black", "missing_or_mixed"):
        raise CdsError(f"race must be white, asian, black or missing_or_mixed, not {race!r}")
    medications = split_drugs(form.get("medications", "")) if (form.get("medications") or "").strip() else None
    return number("age", int), number("height", float), number("weight", float), race, medications


def smart_page_url(base_url: str | None = None) -> str | None:
    """The SMART summary page of this instance, as the service's cards link it (None outside a request)."""
    from flask import has_request_context, request

    if not has_request_context():
        return None
    return (base_url or request.host_url).rstrip("/") + "/smart/launch"


def from_request(runtime, text: str) -> Trial:
    """Cards for a pasted CDS Hooks request, computed as the service computes them."""
    if not text or not text.strip():
        raise CdsError("paste a CDS Hooks request (JSON) first")
    if len(text) > MAX_PASTE:
        raise CdsError(f"the pasted request is {len(text):,} characters; the workbench reads at most {MAX_PASTE:,}")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as err:
        raise CdsError(f"the pasted text is not valid JSON: {err.msg} at line {err.lineno}, "
                       f"column {err.colno}") from None
    if not isinstance(body, dict):
        raise CdsError("a CDS Hooks request is a JSON object with hook, hookInstance, context and prefetch")
    hook = body.get("hook")
    services = [s for s in runtime.services.values() if s.hook == hook]
    if not services:
        known = ", ".join(sorted({s.hook for s in runtime.services.values()}))
        raise CdsError(f"no CDS service of this instance answers the hook {hook!r} (hooks served: {known})")
    service = services[0]
    try:
        hook_request = parse_hook_request(body, service)
    except RequestError as err:
        raise CdsError(f"the service would answer HTTP {err.status}: {err}") from None
    gathered, notes = _prefetch_only(hook_request, dosing_keys_not_needed(runtime.advisor, hook_request))
    case = case_from_hook(hook_request, gathered)
    case.app_url = smart_page_url(runtime.settings.base_url)   # as the service links it
    advice = decide(runtime.advisor, case, runtime.settings.require_consent)
    return Trial(hook_request.hook, advice.cards, advice.evaluation, advice.facts, advice.orders,
                 advice.unresolved, notes, advice.consent, service.id)


def _prefetch_only(hook_request, not_needed: tuple[str, ...] = ()) -> tuple[Gathered, list[str]]:
    """What FhirFetcher.gather does with the prefetch, without its FHIR fetch: a missing required key
    without a fhirServer is the service's 412; with a fhirServer the key stays missing and we say so.
    Keys the service would not fetch for these orders (`not_needed`: a dose's inputs) are not listed."""
    service = hook_request.service
    gathered = Gathered()
    missing = []
    for key, template in service.prefetch.items():
        if key in hook_request.prefetch:
            value = hook_request.prefetch[key]
            # the service's own checks of a prefetched value (cds/cdshooks.py), minus the refetch
            problem = prefetch_problem(value, template) if value is not None else None
            if problem:
                gathered.errors[key] = problem
                continue
            gathered.data[key] = value
            if next_link(value):
                gathered.errors[key] = "the prefetched search has more pages (a 'next' link): results may be incomplete"
        elif key not in not_needed:
            missing.append(key)
    required = [k for k in missing if k not in service.optional_prefetch]
    if required and not hook_request.fhir_server:
        raise CdsError(f"the service would answer HTTP 412: prefetch key(s) {', '.join(required)} missing and "
                       "no fhirServer to fetch them from")
    notes = []
    if missing and hook_request.fhir_server:
        notes.append(f"Prefetch key(s) {', '.join(missing)} are not in the pasted request. The service would "
                     "fetch them from the request's fhirServer; the workbench never contacts a FHIR server, so "
                     "these cards were computed without them and a live call may differ.")
    elif missing:
        notes.append(f"Optional prefetch key(s) {', '.join(missing)} are not in the request; the service, too, "
                     "answers without them when no fhirServer is given.")
    return gathered, notes


def example_request_text() -> str:
    """The shipped example request (provenance: examples/README.md), read once."""
    name = "examples/order-select-clopidogrel-cyp2c19.json"
    return _EXAMPLE.get(name, lambda: files("cds.workbench").joinpath(name).read_text(encoding="utf-8"))


_EXAMPLE: Memo[str] = Memo(1)


def card_json(card: dict[str, Any]) -> str:
    return json.dumps(card, indent=2, ensure_ascii=False)
