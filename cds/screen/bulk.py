"""A FHIR Bulk Data `$export` client (Bulk Data Access IG 2.0, "Bulk Data Export Operation Request
Flow"): kick-off with `Prefer: respond-async`, poll the `Content-Location` honouring `Retry-After`,
read the completion manifest, download each NDJSON output. Authorisation by a bearer token given by
the operator, or obtained and renewed by SMART Backend Services (smart_backend.py).

Where the access token goes: to the FHIR server's origin (scheme, host, port of the kick-off URL)
only. A status URL on another origin is refused rather than sent the token; output files get it only
when the manifest says `requiresAccessToken`, and one on another origin that requires it is refused
(one that does not, e.g. a pre-signed storage URL, is downloaded without it). A request refused with
401 while a Backend Services token was used is sent once more with a new token (it expired during a
long export); requests drops the header on a redirect to another host.

Every failure is a CdsError whose message says which step failed and what the server said (the
OperationOutcome's diagnostics when there is one). Entries of the manifest's `error` array
(OperationOutcome NDJSON) are downloaded and returned, so the run can list them as unreadable.
"""
from __future__ import annotations

import contextlib
import email.utils
import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import orjson
import requests

from cds.errors import CdsError
from cds.screen.smart_backend import StaticToken, origin, require_tls

DEFAULT_TYPES = ("Patient", "Observation", "DiagnosticReport", "MedicationRequest", "MedicationStatement",
                 "Medication", "Consent")
MIN_WAIT, DEFAULT_WAIT, MAX_WAIT = 0.05, 1.0, 120.0


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)     # (where, message)
    transaction_time: str | None = None
    polls: int = 0


def kickoff_url(url: str) -> str:
    return url if "$export" in url else url.rstrip("/") + "/$export"


def _outcome(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())[:300]
        return text or response.reason or ""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = [i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code")
                  for i in body.get("issue") or [] if isinstance(i, dict)]
        return "; ".join(str(i) for i in issues if i) or "OperationOutcome without diagnostics"
    return " ".join(str(body).split())[:300]


def retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait: Retry-After as delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return DEFAULT_WAIT
    value = value.strip()
    if value.isdigit():
        return min(MAX_WAIT, max(MIN_WAIT, float(value)))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_WAIT
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delay = when.timestamp() - (now if now is not None else time.time())
    return min(MAX_WAIT, max(MIN_WAIT, delay))


class BulkExportClient:
    def __init__(self, url: str, token: str | None = None, *, credentials=None, types: tuple[str, ...] = DEFAULT_TYPES,
                 timeout: float = 30.0, max_wait: float = 3600.0, session: requests.Session | None = None):
        """`credentials`: an object with `token()`, `expire(token)` and `renewable` (smart_backend's
        BackendServicesToken or StaticToken); `token` is shorthand for a StaticToken."""
        self.url = kickoff_url(url)
        self.credentials = credentials or (StaticToken(token) if token else None)
        if self.credentials is not None:
            require_tls(self.url, "the Bulk Data server")
        self.origin = origin(self.url)
        self.types = types
        self.timeout = timeout
        self.max_wait = max_wait
        self.session = session or requests.Session()

    def _request(self, method: str, url: str, step: str, accept: str, auth: bool = True,
                 headers: dict[str, str] | None = None, **kwargs) -> requests.Response:
        auth = auth and self.credentials is not None
        if auth and origin(url) != self.origin:
            scheme, host, port = self.origin
            raise CdsError(f"Bulk Data {step}: {url} would be sent the access token but is not on the FHIR "
                           f"server's origin ({scheme}://{host}:{port}); the token goes nowhere else")

        def send(token: str | None) -> requests.Response:
            bearer = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                return self.session.request(method, url, timeout=self.timeout,
                                            headers={"Accept": accept, **(headers or {}), **bearer}, **kwargs)
            except requests.RequestException as err:
                raise CdsError(f"Bulk Data {step} failed: {url}: {err.__class__.__name__}: {err}") from None

        credentials = self.credentials if auth else None
        sent = credentials.token() if credentials is not None else None
        response = send(sent)
        if response.status_code == 401 and sent and credentials is not None and credentials.renewable:
            response.close()
            credentials.expire(sent)                # it expired during the export: once more, with a new token
            response = send(credentials.token())
        return response

    def kickoff(self) -> str:
        params = {"_type": ",".join(self.types)} if self.types else None
        response = self._request("GET", self.url, "kick-off", "application/fhir+json",
                                 headers={"Prefer": "respond-async"}, params=params)
        if response.status_code != 202:
            raise CdsError(f"Bulk Data kick-off {self.url} answered {response.status_code}: {_outcome(response)}")
        location = response.headers.get("Content-Location")
        if not location:
            raise CdsError(f"Bulk Data kick-off {self.url} answered 202 without a Content-Location to poll")
        return urljoin(response.url, location)

    def wait(self, status_url: str, result: ExportResult) -> dict[str, Any]:
        deadline = time.monotonic() + self.max_wait
        while True:
            response = self._request("GET", status_url, "status request", "application/json")
            result.polls += 1
            if response.status_code == 200:
                try:
                    manifest = response.json()
                except ValueError:
                    raise CdsError(f"Bulk Data status {status_url}: the completion manifest is not JSON") from None
                if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                    raise CdsError(f"Bulk Data status {status_url}: the manifest has no 'output' array")
                return manifest
            if response.status_code not in (202, 429):
                raise CdsError(f"Bulk Data export failed ({status_url} answered {response.status_code}): "
                               f"{_outcome(response)}")
            delay = retry_after(response.headers.get("Retry-After"))
            if time.monotonic() + delay > deadline:
                raise CdsError(f"Bulk Data export not complete after {self.max_wait:.0f} s "
                               f"(last progress: {response.headers.get('X-Progress') or 'not given'})")
            time.sleep(delay)

    def download(self, manifest: dict[str, Any], folder: Path, result: ExportResult) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        auth = bool(manifest.get("requiresAccessToken"))
        for i, item in enumerate(manifest["output"]):
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                result.errors.append((f"manifest output {i}", "an output entry without a url"))
                continue
            kind = item.get("type") if isinstance(item.get("type"), str) else "Resource"
            target = folder / f"{i + 1:03d}.{kind}.ndjson"
            self._save(urljoin(self.url, item["url"]), target, auth)
            result.files.append(target)
        for i, item in enumerate(manifest.get("error") or []):
            url = item.get("url") if isinstance(item, dict) else None
            if not isinstance(url, str):
                continue
            target = folder.parent / f"{folder.name}-errors" / f"{i + 1:03d}.OperationOutcome.ndjson"
            target.parent.mkdir(parents=True, exist_ok=True)
            self._save(urljoin(self.url, url), target, auth)
            for n, line in enumerate(target.read_bytes().splitlines(), 1):
                try:
                    outcome = orjson.loads(line)
                except orjson.JSONDecodeError:
                    result.errors.append((f"{target.name}:{n}", "export error file line is not JSON"))
                    continue
                for issue in outcome.get("issue") or []:
                    text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
                    result.errors.append((f"export error {target.name}:{n}", f"the server could not export: {text}"))

    def _save(self, url: str, target: Path, auth: bool) -> None:
        response = self._request("GET", url, "download", "application/fhir+ndjson", auth, stream=True)
        with response:
            if response.status_code != 200:
                raise CdsError(f"Bulk Data download {url} answered {response.status_code}: {_outcome(response)}")
            with open(target, "wb") as f:
                for block in response.iter_content(1 << 20):
                    f.write(block)

    def run(self, folder: Path) -> ExportResult:
        result = ExportResult()
        status_url = self.kickoff()
        manifest = self.wait(status_url, result)
        result.transaction_time = manifest.get("transactionTime")
        self.download(manifest, folder, result)
        # tell the server it may delete the files (Bulk Data: "client SHOULD" after download)
        with contextlib.suppress(CdsError):
            self._request("DELETE", status_url, "delete request", "application/json").close()
        return result
