"""A FHIR Bulk Data `$export` client (Bulk Data Access IG 2.0, "Bulk Data Export Operation Request
Flow"): kick-off with `Prefer: respond-async`, poll the `Content-Location` honouring `Retry-After`,
read the completion manifest, download each NDJSON output. Authorisation by a bearer token (obtained
however the site obtains it, e.g. SMART Backend Services); the token is sent to output URLs only when
the manifest says `requiresAccessToken`.

Every failure is a CdsError whose message says which step failed and what the server said (the
OperationOutcome's diagnostics when there is one). Entries of the manifest's `error` array
(OperationOutcome NDJSON) are downloaded and returned, so the run can list them as unreadable.
"""
from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import orjson
import requests

from cds.errors import CdsError

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
        when = when.replace(tzinfo=timezone.utc)
    delay = when.timestamp() - (now if now is not None else time.time())
    return min(MAX_WAIT, max(MIN_WAIT, delay))


class BulkExportClient:
    def __init__(self, url: str, token: str | None = None, *, types: tuple[str, ...] = DEFAULT_TYPES,
                 timeout: float = 30.0, max_wait: float = 3600.0, session: requests.Session | None = None):
        self.url = kickoff_url(url)
        self.token = token
        self.types = types
        self.timeout = timeout
        self.max_wait = max_wait
        self.session = session or requests.Session()

    def _headers(self, accept: str, auth: bool = True) -> dict[str, str]:
        headers = {"Accept": accept}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _get(self, url: str, step: str, **kwargs) -> requests.Response:
        try:
            return self.session.get(url, timeout=self.timeout, **kwargs)
        except requests.RequestException as err:
            raise CdsError(f"Bulk Data {step} failed: {url}: {err.__class__.__name__}: {err}") from None

    def kickoff(self) -> str:
        headers = {**self._headers("application/fhir+json"), "Prefer": "respond-async"}
        params = {"_type": ",".join(self.types)} if self.types else None
        response = self._get(self.url, "kick-off", headers=headers, params=params)
        if response.status_code != 202:
            raise CdsError(f"Bulk Data kick-off {self.url} answered {response.status_code}: {_outcome(response)}")
        location = response.headers.get("Content-Location")
        if not location:
            raise CdsError(f"Bulk Data kick-off {self.url} answered 202 without a Content-Location to poll")
        return urljoin(response.url, location)

    def wait(self, status_url: str, result: ExportResult) -> dict[str, Any]:
        deadline = time.monotonic() + self.max_wait
        while True:
            response = self._get(status_url, "status request", headers=self._headers("application/json"))
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
        response = self._get(url, "download", headers=self._headers("application/fhir+ndjson", auth), stream=True)
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
        try:  # tell the server it may delete the files (Bulk Data: "client SHOULD" after download)
            self.session.delete(status_url, headers=self._headers("application/json"), timeout=self.timeout)
        except requests.RequestException:
            pass
        return result
