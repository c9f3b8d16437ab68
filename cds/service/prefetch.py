"""Gather the FHIR data a hook call needs: prefetch first, then the EHR's FHIR server for the rest.

CDS Hooks 2.0, Prefetch Template: "It is the CDS Service's responsibility to check prefetched data
against its template to determine what requests were satisfied (if any) and to manually retrieve any
additional necessary data" through `fhirServer` with `fhirAuthorization` (FHIR Resource Access). So:
- a missing key is fetched; a prefetched OperationOutcome (or anything that is not the template's
  answer) is a failed retrieval: fetched again when a fhirServer is given, else recorded in
  `Gathered.errors` (the "check could not be completed" card, and the audit);
- a searchset page with a `next` link (FHIR R4 http.html#paging) is followed to its end on the
  fhirServer's own origin; without a fhirServer, or to another origin, the incompleteness is recorded;
- the results of Genomics Reports (DiagnosticReport.result), the results therapeutic implications are
  derived from (derivedFrom) and the Medications of orders (medicationReference) that the gathered data
  leave open are read from the fhirServer.
Every request goes through cds.service.fhirclient (deadlines, per-origin cap, size limit, same-origin
redirects); all of them end within one time budget, and a failure is recorded, never raised. Error
messages never contain a query or URL (they hold the patient id) or the token.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import quote, urljoin

from cds.cdshooks import GENOMIC_KEYS, Gathered, HookRequest, RequestError, next_link, prefetch_problem
from cds.fhir.mappings import default_mappings
from cds.fhir.resources import concept_keys
from cds.service.fhirclient import FetchError, FetchSession, FhirClient, Limits, origin_of

log = logging.getLogger("cds.service.fhir")
_TOKEN = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
_MAX_PAGES = 20
_MAX_REFERENCES = 50                 # reads by reference per call (report results, order Medications)
_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")


def render_template(template: str, context: dict[str, Any]) -> str | None:
    """Replace prefetch tokens; None when a token has no value in this context."""
    missing = False

    def value(match: re.Match) -> str:
        nonlocal missing
        name = match.group(1)
        if name.startswith("context."):
            raw = context.get(name[len("context."):])
        elif name in ("userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"):
            user = context.get("userId") or ""
            wanted = name[len("user"):-len("Id")]
            raw = user.split("/", 1)[1] if user.startswith(wanted + "/") else None
        else:
            raw = None
        if not isinstance(raw, str) or not raw:
            missing = True
            return ""
        return quote(raw.split("/")[-1] if name == "context.patientId" else raw, safe="")

    rendered = _TOKEN.sub(value, template)
    return None if missing else rendered


class FhirFetcher:
    def __init__(self, client: FhirClient, budget: float):
        self.client = client
        self.budget = budget

    @classmethod
    def from_settings(cls, settings) -> FhirFetcher:
        return cls(FhirClient(Limits(connect_timeout=settings.fhir_connect_timeout, read_timeout=settings.fhir_timeout,
                                     max_bytes=settings.fhir_max_bytes, per_origin=settings.fhir_per_origin)),
                   settings.fhir_budget)

    def gather(self, request: HookRequest, not_needed: Collection[str] = ()) -> Gathered:
        """The data of one call: the prefetch, and what is missing fetched from fhirServer. Keys in
        `not_needed` (the clinical inputs of a dose, when no ordered drug has a dosing algorithm) are used
        when prefetched but not fetched."""
        service = request.service
        server = request.fhir_server.rstrip("/") if request.fhir_server else None
        out = Gathered()
        tasks: dict[str, Callable[[FetchSession], Any]] = {}
        missing_required = []
        for key, template in service.prefetch.items():
            if key not in request.prefetch:
                if key in not_needed:
                    continue
                if server:
                    tasks[key] = self._template_task(server, template, request)
                elif key not in service.optional_prefetch:
                    missing_required.append(key)
                continue
            value = request.prefetch[key]
            if value is None:                       # spec: the EHR has no data for this key
                out.data[key] = None
                continue
            problem = prefetch_problem(value, template)
            if problem is None:
                out.data[key] = value
                more = next_link(value)
                if more is None:
                    continue
                more = _absolute(more, server)
                if not server:
                    out.errors[key] = ("the prefetched search has more pages (a 'next' link) and there is no "
                                       "fhirServer to fetch them from: results may be incomplete")
                elif more is None or origin_of(more) != origin_of(server):
                    out.errors[key] = ("the prefetched search's 'next' link points to another server than "
                                       "fhirServer: not followed (the access token is only for fhirServer); "
                                       "results may be incomplete")
                else:
                    tasks[key] = self._pages_task(server, value, more, request.access_token)
            elif server:
                out.refetched[key] = problem
                tasks[key] = self._template_task(server, template, request)
            else:
                out.errors[key] = f"{problem}; there is no fhirServer to fetch it again from"
        if missing_required:
            raise RequestError(
                f"prefetch key(s) {', '.join(missing_required)} missing and no fhirServer to fetch them from",
                status=412)
        deadline = time.monotonic() + self.budget
        if tasks:
            for key, (value, error) in self._run(tasks, deadline).items():
                if value is not None:
                    out.data[key] = value
                    out.fetched.append(key)
                if error:
                    out.errors[key] = error
        self._follow_references(request, server, out, deadline)
        for key, why in out.errors.items():
            log.warning("FHIR data for prefetch key %r incomplete: %s", key, why)
        return out

    # --- tasks ----------------------------------------------------------------------------------

    def _template_task(self, server: str, template: str, request: HookRequest) -> Callable[[FetchSession], Any]:
        query = render_template(template, request.context)
        token = request.access_token

        def run(session: FetchSession):
            if query is None:
                return None, "a prefetch token has no value in this context"
            path = query.lstrip("/")
            if path.startswith("DiagnosticReport?") and "_include=" not in path:
                # the reports' results in the same answer (FHIR R4 search.html#include); a server that
                # ignores _include still gets its references followed afterwards
                path += "&_include=DiagnosticReport:result"
            url = f"{server}/{path}"
            is_search = "?" in path or "/" not in path
            try:
                page = session.get_json(url, token)
            except FetchError as err:
                return None, str(err)
            problem = prefetch_problem(page, template)
            if problem:
                return None, f"FHIR server answered with {problem.removeprefix('the EHR sent ')}"
            if not is_search:
                return page, None
            return self._rest_of_pages(session, server, page, token)
        return run

    def _pages_task(self, server: str, first: dict, more: str, token: str | None) -> Callable[[FetchSession], Any]:
        def run(session: FetchSession):
            return self._rest_of_pages(session, server, first, token, start=more)
        return run

    def _rest_of_pages(self, session: FetchSession, server: str, first: dict, token: str | None,
                       start: str | None = None) -> tuple[dict, str | None]:
        """`first` with the entries of every following page; the error when a page could not be had."""
        entries = list(first.get("entry") or [])
        url = start or _absolute(next_link(first), server)
        pages = 1
        error = None
        while url:
            if origin_of(url) != origin_of(server):
                error = ("the search's 'next' link points to another server than fhirServer: not followed (the "
                         "access token is only for fhirServer); results may be incomplete")
                break
            if pages >= _MAX_PAGES:
                error = f"the search has more than {_MAX_PAGES} pages: results may be incomplete"
                break
            try:
                page = session.get_json(url, token)
            except FetchError as err:
                error = f"page {pages + 1} of the search: {err}; results may be incomplete"
                break
            if not isinstance(page, dict) or page.get("resourceType") != "Bundle" or \
                    (page.get("entry") is not None and not isinstance(page.get("entry"), list)):
                error = f"page {pages + 1} of the search is not a Bundle: results may be incomplete"
                break
            pages += 1
            entries.extend(page.get("entry") or [])
            url = _absolute(next_link(page), server)
        merged = {**first, "entry": entries, "link": [link for link in first.get("link") or []
                                                      if isinstance(link, dict) and link.get("relation") == "self"]}
        return merged, error

    def _run(self, tasks: dict[str, Callable[[FetchSession], Any]],
             deadline: float) -> dict[str, tuple[Any, str | None]]:
        """Each task on its own thread (never a pool another call could have filled), all ended by the
        deadline: the client's watchdog closes whatever connection is still open then."""
        results: dict[str, tuple[Any, str | None]] = {}

        def work(key: str, task: Callable[[FetchSession], Any]) -> None:
            try:
                with self.client.session(deadline) as session:
                    results[key] = task(session)
            except Exception:                       # a bug must not sink the call: it is a failed fetch
                log.exception("fetching prefetch key %r failed", key)
                results[key] = (None, "internal error while fetching")

        threads = [threading.Thread(target=work, args=(k, t), name=f"fhir-fetch-{k}", daemon=True)
                   for k, t in tasks.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 0.2)
        for key in tasks:
            if key not in results:
                results[key] = (None, f"no complete answer within the {self.budget:g} s budget")
        return dict(results)

    # --- references -----------------------------------------------------------------------------

    def _follow_references(self, request: HookRequest, server: str | None, out: Gathered, deadline: float) -> None:
        """Read the report results and order Medications that the gathered data refer to but do not hold."""
        candidates = []                                  # (reference, type, error key, what it is)
        for key in GENOMIC_KEYS:
            for report in _resources(out.data.get(key), "DiagnosticReport"):
                for ref in report.get("result") or []:
                    candidates.append((ref, "Observation", key, "a DiagnosticReport result"))
            # a therapeutic implication or phenotype is read with the genotype it is derived from (its gene,
            # when it names none: genomics-operations' implications): read that too
            for obs in _resources(out.data.get(key), "Observation"):
                if _derived_kind(obs):
                    for ref in obs.get("derivedFrom") or []:
                        candidates.append((ref, "Observation", key, "a result an implication is derived from"))
        if request.hook == "patient-view":
            orders = out.data.get("medications")
        else:
            orders = request.context.get("draftOrders") or request.context.get("medications")
        for order in _resources(orders, "MedicationRequest"):
            if "medicationReference" in order:
                candidates.append((order["medicationReference"], "Medication", "medication-references",
                                   "an order's Medication"))
        if not candidates:
            return                                       # the common case: nothing refers outside the data
        known = _known_keys(list(out.data.values()) + [request.context.get("draftOrders"),
                                                       request.context.get("medications")])
        wanted: dict[str, tuple[str, str]] = {}          # Type/id → (error key, what it is)
        foreign: dict[str, int] = {}
        for ref, rtype, key, what in candidates:
            _want(ref, rtype, key, what, known, server, wanted, foreign)
        for key, count in foreign.items():
            out.errors[key] = _join(out.errors.get(key), f"{count} referenced resource(s) on another server than "
                                                         "fhirServer: not fetched (the access token is only for "
                                                         "fhirServer)")
        if not wanted:
            return
        if not server:
            missing: dict[str, int] = {}
            for key, _ in wanted.values():
                missing[key] = missing.get(key, 0) + 1
            for key, count in missing.items():
                if key != "medication-references":        # an unresolved order is audited by the resolver
                    out.errors[key] = _join(out.errors.get(key), f"{count} DiagnosticReport result(s) or results an "
                                            "implication is derived from are not in the prefetch and there is no "
                                            "fhirServer to read them from")
            return
        targets = list(wanted.items())
        if len(targets) > _MAX_REFERENCES:
            for _ref, (key, _) in targets[_MAX_REFERENCES:]:
                out.errors[key] = _join(out.errors.get(key), f"more than {_MAX_REFERENCES} referenced resources: "
                                        "the rest were not read")
            targets = targets[:_MAX_REFERENCES]
        token = request.access_token

        def read(ref: str, rtype: str) -> Callable[[FetchSession], Any]:
            def run(session: FetchSession):
                try:
                    resource = session.get_json(f"{server}/{ref}", token)
                except FetchError as err:
                    return None, str(err)
                if not isinstance(resource, dict) or resource.get("resourceType") != rtype or \
                        resource.get("id") != ref.split("/")[1]:
                    return None, f"FHIR server answered a read of a {rtype} with something else"
                return resource, None
            return run

        results = self._run({ref: read(ref, ref.split("/")[0]) for ref, _ in targets}, deadline)
        failures: dict[str, list[str]] = {}
        for ref, (key, what) in targets:
            resource, error = results[ref]
            if resource is not None:
                out.referenced.append({"fullUrl": f"{server}/{ref}", "resource": resource})
            else:
                failures.setdefault(key, []).append(f"{what} could not be read ({error})")
        for key, reasons in failures.items():
            out.errors[key] = _join(out.errors.get(key), "; ".join(sorted(set(reasons))))


def _absolute(url: str | None, server: str | None) -> str | None:
    """A `next` link as an absolute URL: a relative one is relative to fhirServer (FHIR R4 http.html#general)."""
    if url is None or "://" in url or not server:
        return url
    return urljoin(server + "/", url)      # "Observation?…" under the base; "/fhir/Observation?…" on its host


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second


def _derived_kind(obs: dict) -> bool:
    """Whether an Observation is of a kind read with what it is derived from (a therapeutic implication, a
    phenotype: cds.fhir's observation_kinds)."""
    kinds = default_mappings().observation_kinds
    return any(kinds.get(k) in ("therapeutic-implication", "phenotype") for k in concept_keys(obs.get("code")))


def _resources(value: Any, rtype: str) -> list[dict]:
    """The top-level resources of one type in a resource, a Bundle or a list (entries only, not contained)."""
    if isinstance(value, list):
        return [r for item in value for r in _resources(item, rtype)]
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == rtype:
        return [value]
    if value.get("resourceType") != "Bundle":
        return []
    return [e["resource"] for e in value.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == rtype]


def _known_keys(values: list[Any]) -> set[str]:
    """Type/id and fullUrl of every resource in the gathered data, contained ones with their container."""
    known: set[str] = set()

    def walk(resource: Any, depth: int = 0) -> None:
        if not isinstance(resource, dict) or depth > 4:
            return
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if isinstance(rtype, str) and isinstance(rid, str):
            known.add(f"{rtype}/{rid}")
        if rtype == "Bundle":
            for entry in resource.get("entry") or []:
                if isinstance(entry, dict):
                    if isinstance(entry.get("fullUrl"), str):
                        known.add(entry["fullUrl"])
                    walk(entry.get("resource"), depth + 1)
    for value in values:
        walk(value)
    return known


def _want(reference: Any, rtype: str, key: str, what: str, known: set[str], server: str | None,
          wanted: dict[str, tuple[str, str]], foreign: dict[str, int]) -> None:
    ref = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(ref, str) or not ref or ref.startswith("#") or ref in known:
        return                       # nothing to follow, contained (the reader finds it), or already here
    if "://" in ref:
        base_origin = origin_of(server) if server else None
        if origin_of(ref) is None or origin_of(ref) != base_origin:
            if server:
                foreign[key] = foreign.get(key, 0) + 1
            return
        if not server or not ref.startswith(server + "/"):
            foreign[key] = foreign.get(key, 0) + 1
            return
        ref = ref[len(server) + 1:]
    if ref.startswith("urn:"):
        return                       # a Bundle-local id: the reader resolves it or reports it
    match = _REFERENCE.match(ref)
    if not match or match.group(1) != rtype:
        return
    plain = f"{match.group(1)}/{match.group(2)}"
    if plain in known:
        return
    wanted.setdefault(plain, (key, what))
