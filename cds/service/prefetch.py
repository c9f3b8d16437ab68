"""Gather the FHIR data a hook call needs: prefetch first, then the EHR's FHIR server for missing keys.

Missing keys are fetched concurrently with the bearer token from `fhirAuthorization`, each request
bounded by a timeout and all of them by one time budget; a failure is recorded, never raised, so
the service still answers within the budget (and says what it could not check). Error messages
never contain the query (it holds the patient id) or the token.
"""
from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import quote

import requests

from cds.cdshooks import Gathered, HookRequest, RequestError

log = logging.getLogger("cds.service.fhir")
_TOKEN = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
_MAX_PAGES = 20


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
    def __init__(self, timeout: float, budget: float, executor: ThreadPoolExecutor | None = None):
        self.timeout = timeout
        self.budget = budget
        self.executor = executor or ThreadPoolExecutor(max_workers=8, thread_name_prefix="fhir-fetch")
        self.session = requests.Session()

    def gather(self, request: HookRequest) -> Gathered:
        service = request.service
        out = Gathered()
        missing = []
        for key in service.prefetch:
            if key in request.prefetch:
                value = request.prefetch[key]           # None: the EHR has no data for it (spec)
                if value is None or (isinstance(value, dict) and isinstance(value.get("resourceType"), str)):
                    out.data[key] = value
                else:
                    out.errors[key] = "the prefetched value is not a FHIR resource or Bundle"
            else:
                missing.append(key)
        if not missing:
            return out
        if not request.fhir_server:
            required = [k for k in missing if k not in service.optional_prefetch]
            if required:
                raise RequestError(
                    f"prefetch key(s) {', '.join(required)} missing and no fhirServer to fetch them from",
                    status=412)
            return out
        deadline = time.monotonic() + self.budget
        futures = {}
        for key in missing:
            query = render_template(service.prefetch[key], request.context)
            if query is None:
                out.errors[key] = "a prefetch token has no value in this context"
                continue
            futures[key] = self.executor.submit(self._fetch, request.fhir_server, query, request.access_token, deadline)
        done, not_done = wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()) + 0.05)
        for key, future in futures.items():
            if future in not_done:
                future.cancel()
                out.errors[key] = f"no answer within the {self.budget:g} s budget"
                continue
            try:
                out.data[key] = future.result()
                out.fetched.append(key)
            except FetchError as err:
                out.errors[key] = str(err)
        for key, why in out.errors.items():
            log.warning("FHIR fetch of prefetch key %r failed: %s", key, why)
        return out

    def _fetch(self, server: str, query: str, token: str | None, deadline: float) -> Any:
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{server.rstrip('/')}/{query.lstrip('/')}"
        first = None
        entries: list[Any] = []
        for _ in range(_MAX_PAGES):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"no answer within the {self.budget:g} s budget")
            try:
                response = self.session.get(url, headers=headers, timeout=min(self.timeout, remaining))
            except requests.Timeout:
                raise FetchError(f"timed out after {min(self.timeout, remaining):.1f} s") from None
            except requests.RequestException as err:
                raise FetchError(f"connection failed ({type(err).__name__})") from None
            if response.status_code != 200:
                raise FetchError(f"FHIR server answered HTTP {response.status_code}")
            try:
                page = response.json()
            except ValueError:
                raise FetchError("FHIR server answered with something that is not JSON") from None
            if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
                return page                                   # a read: one resource
            if first is None:
                first = page
            entries.extend(page.get("entry") or [])
            url = next((l.get("url") for l in page.get("link") or [] if isinstance(l, dict) and l.get("relation") == "next"), None)
            if not url:
                break
        return {**(first or {}), "entry": entries, "link": []}


class FetchError(Exception):
    pass
