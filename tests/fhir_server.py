"""A real FHIR R4 server on loopback for tests of the fetch path: an HTTP server on a thread.

What it does, and what each part follows:
- search (FHIR R4 http.html#search, search.html): `GET [base]/[type]?…` by `patient` / `subject`
  (`p1` or `Patient/p1`), `code` and `category` (token: `system|code` or `code`, comma = OR, search.html
  #token), `status` (comma = OR) and `_id`; `_include=DiagnosticReport:result` adds the reports' results
  with `search.mode: include` (search.html#include); other parameters are ignored (and recorded).
- paging (FHIR R4 http.html#paging, bundle.html#searchset): `_count` or `page_size` entries a page; a page
  with more after it carries a `next` link (an opaque `_page` token on the same base).
- read (http.html#read): `GET [base]/[type]/[id]`, 404 with an OperationOutcome when unknown.
- every request is recorded in `requests` (path, query, Authorization header, remote port).

Told to misbehave (`misbehave(kind, only=TYPE, **options)`, `only` limits it to one resource type):
  status   answer HTTP `code` (default 500) with an OperationOutcome body
  outcome  answer 200 with an OperationOutcome where a Bundle should be
  delay    sleep `seconds` before answering
  trickle  send the headers, then one byte of a (valid) Bundle every `interval` s until the client hangs up
  trickle-headers  send the status line and headers one byte every `interval` s
  redirect answer `code` (default 302) with Location = `to` + the same path and query (`once=True`: then
           behave)
  huge     a valid searchset Bundle of about `size` bytes, streamed in 64 KiB chunks (chunked when
           `chunked=True`, else with Content-Length)
  gzip-bomb  a gzip-encoded Bundle (Content-Encoding: gzip) that inflates to about `size` bytes
  next-to  `next` links point to the base URL `to` (another server) instead of this one
  html     answer 200 with an HTML page (a login page or a proxy's error)
  ignore-patient  search as if no `patient`/`subject` parameter were given: every patient's resources
           of the type come back (a server, or a proxy, that drops the filter)

`open_connections` counts the connections being served now, so a test can tell whether a client
that gave up has really hung up.
"""
from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

CHUNK = 64 * 1024


@dataclass
class Misbehaviour:
    kind: str
    only: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def outcome(code: str, text: str) -> dict:
    """An OperationOutcome as FHIR R4 operationoutcome.html describes it."""
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


def _tokens(values: list[str]) -> list[tuple[str | None, str]]:
    out = []
    for value in values:
        for token in value.split(","):
            system, bar, code = token.rpartition("|")
            out.append((system if bar else None, code))
    return out


def _concept_matches(concepts: Any, wanted: list[tuple[str | None, str]]) -> bool:
    if isinstance(concepts, dict):
        concepts = [concepts]
    for concept in concepts or []:
        for coding in (concept.get("coding") or []) if isinstance(concept, dict) else []:
            for system, code in wanted:
                if coding.get("code") == code and (system is None or coding.get("system") == system):
                    return True
    return False


def _patient_of(resource: dict) -> str | None:
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    if isinstance(ref, str) and ref.startswith("Patient/"):
        return ref.split("/")[1]
    return None


class FhirTestServer:
    def __init__(self, page_size: int | None = None):
        self.store: dict[tuple[str, str], dict] = {}
        self.requests: list[dict] = []
        self.page_size = page_size
        self.relative_links = False        # True: `next` links relative to the base, as some servers write them
        self.supports_include = True       # False: `_include` is ignored, as servers may (search.html#include)
        self.misbehaviours: list[Misbehaviour] = []
        self.open_connections = 0
        self.peak_connections = 0          # the most open at once (reset it to measure a phase)
        self._lock = threading.Lock()
        fhir = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle(self):
                with fhir._lock:
                    fhir.open_connections += 1
                    fhir.peak_connections = max(fhir.peak_connections, fhir.open_connections)
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass
                finally:
                    with fhir._lock:
                        fhir.open_connections -= 1

            def do_GET(self):
                fhir._answer(self)

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that hung up on a deliberately slow answer: what the tests want

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.origin = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.origin}/fhir"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # --- set-up ---------------------------------------------------------------------------------

    def add(self, *resources: dict) -> None:
        for resource in resources:
            self.store[(resource["resourceType"], resource["id"])] = copy.deepcopy(resource)

    def misbehave(self, kind: str, only: str | None = None, **options: Any) -> None:
        if kind == "gzip-bomb":          # compressed once, here, so the answer itself is instant
            options["data"] = self._gzip_bomb_data(only or "Observation", options.get("size", 200 * 1024 * 1024))
        self.misbehaviours.append(Misbehaviour(kind, only, options))

    def behave(self) -> None:
        self.misbehaviours.clear()

    def searched(self, resource_type: str) -> list[dict]:
        """The recorded requests for searches of one type."""
        return [r for r in self.requests if r["path"].rstrip("/").endswith("/" + resource_type)]

    def wait_until_idle(self, timeout: float = 5.0) -> bool:
        """True when no connection is open (within `timeout`)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.open_connections == 0:
                return True
            time.sleep(0.02)
        return self.open_connections == 0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- answering ------------------------------------------------------------------------------

    def _misbehaviour(self, kind_of_resource: str, kinds: tuple[str, ...]) -> Misbehaviour | None:
        for m in self.misbehaviours:
            if m.kind in kinds and (m.only is None or m.only == kind_of_resource):
                return m
        return None

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(h.path)
        query = parse_qs(parsed.query)
        relative = parsed.path.removeprefix("/fhir").strip("/")
        parts = relative.split("/") if relative else []
        rtype = parts[0] if parts else ""
        self.requests.append({"path": parsed.path, "query": query, "authorization": h.headers.get("Authorization"),
                              "port": h.client_address[1], "at": time.monotonic()})
        if m := self._misbehaviour(rtype, ("delay",)):
            time.sleep(m.options.get("seconds", 5.0))
        if m := self._misbehaviour(rtype, ("trickle-headers",)):
            return self._trickle_headers(h, m.options.get("interval", 0.2))
        if m := self._misbehaviour(rtype, ("redirect",)):
            if m.options.get("once"):
                self.misbehaviours.remove(m)
            h.send_response(m.options.get("code", 302))
            h.send_header("Location", m.options["to"].rstrip("/") + "/" + relative + (f"?{parsed.query}" if parsed.query else ""))
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if m := self._misbehaviour(rtype, ("status",)):
            code = m.options.get("code", 500)
            return self._send(h, outcome("exception", f"deliberate HTTP {code}"), code)
        if m := self._misbehaviour(rtype, ("outcome",)):
            return self._send(h, outcome("too-costly", "deliberate OperationOutcome instead of a Bundle"))
        if m := self._misbehaviour(rtype, ("html",)):
            return self._send_bytes(h, b"<html><body>Please log in</body></html>", "text/html")
        if m := self._misbehaviour(rtype, ("gzip-bomb",)):
            return self._gzip_bomb(h, m.options["data"])
        if m := self._misbehaviour(rtype, ("huge",)):
            return self._huge(h, rtype, m.options.get("size", 50 * 1024 * 1024), m.options.get("chunked", False))
        if len(parts) >= 2:
            found = self.store.get((parts[0], parts[1]))
            if found is None:
                return self._send(h, outcome("not-found", f"{parts[0]}/{parts[1]} is not known"), 404)
            body = found
        elif rtype:
            body = self._search(rtype, query)
        else:
            return self._send(h, outcome("not-supported", "no resource type"), 400)
        if m := self._misbehaviour(rtype, ("trickle",)):
            return self._trickle(h, json.dumps(body).encode(), m.options.get("interval", 0.2))
        self._send(h, body)

    def _search(self, rtype: str, query: dict[str, list[str]]) -> dict:
        matches = [r for (t, _), r in sorted(self.store.items()) if t == rtype]
        patient = (query.get("patient") or query.get("subject") or [None])[0]
        if patient is not None and not self._misbehaviour(rtype, ("ignore-patient",)):
            pid = patient.removeprefix("Patient/")
            matches = [r for r in matches if _patient_of(r) == pid]
        for name, element in (("code", "code"), ("category", "category")):
            if name in query:
                wanted = _tokens(query[name])
                matches = [r for r in matches if _concept_matches(r.get(element), wanted)]
        if "status" in query:
            statuses = {s for v in query["status"] for s in v.split(",")}
            matches = [r for r in matches if r.get("status") in statuses]
        if "_id" in query:
            ids = {s for v in query["_id"] for s in v.split(",")}
            matches = [r for r in matches if r.get("id") in ids]
        size = int((query.get("_count") or [0])[0] or 0) or self.page_size or len(matches) or 1
        start = int((query.get("_page") or ["0"])[0])
        page = matches[start:start + size]
        entries = [{"fullUrl": f"{self.url}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in page]
        if self.supports_include and "DiagnosticReport:result" in query.get("_include", []) and rtype == "DiagnosticReport":
            seen = set()
            for report in page:
                for ref in report.get("result") or []:
                    target = ref.get("reference", "") if isinstance(ref, dict) else ""
                    key = tuple(target.split("/")[-2:])
                    if len(key) == 2 and key in self.store and key not in seen:
                        seen.add(key)
                        entries.append({"fullUrl": f"{self.url}/{key[0]}/{key[1]}", "resource": self.store[key],
                                        "search": {"mode": "include"}})
        plain = {k: v for k, v in query.items() if k != "_page"}
        links = [{"relation": "self", "url": f"{self.url}/{rtype}?{urlencode(plain, doseq=True)}"}]
        if start + size < len(matches):
            base = self.url
            if m := self._misbehaviour(rtype, ("next-to",)):
                base = m.options["to"].rstrip("/")
            target = f"{rtype}?{urlencode({**plain, '_page': [str(start + size)]}, doseq=True)}"
            links.append({"relation": "next", "url": target if self.relative_links and base == self.url else f"{base}/{target}"})
        return {"resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links, "entry": entries}

    # --- writing --------------------------------------------------------------------------------

    def _send(self, h, body: dict, status: int = 200) -> None:
        self._send_bytes(h, json.dumps(body).encode(), "application/fhir+json", status)

    @staticmethod
    def _send_bytes(h, data: bytes, content_type: str, status: int = 200) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _trickle(h, data: bytes, interval: float) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.flush()
        for i in range(len(data)):
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()
            time.sleep(interval)

    @staticmethod
    def _trickle_headers(h, interval: float) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nX-Padding: " + b"x" * 100000 + b"\r\n\r\n"
        for i in range(len(head)):
            h.wfile.write(head[i:i + 1])
            h.wfile.flush()
            time.sleep(interval)

    @staticmethod
    def _gzip_bomb_data(rtype: str, size: int) -> bytes:
        import zlib

        z = zlib.compressobj(9, zlib.DEFLATED, 31)           # 31: gzip framing
        parts = [z.compress(b'{"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "'
                            + rtype.encode() + b'", "id": "bomb", "note": [{"text": "')]
        block = b"a" * (1024 * 1024)
        parts += [z.compress(block) for _ in range(size // len(block))]
        parts += [z.compress(b'"}]}}]}'), z.flush()]
        return b"".join(parts)

    @staticmethod
    def _gzip_bomb(h, data: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _huge(self, h, rtype: str, size: int, chunked: bool) -> None:
        # A valid Bundle whose one entry carries a long note, so only its size is wrong.
        head = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": rtype or "Observation", "id": "huge", "note": [{"text": "@@"}]}}]}).encode()
        before, after = head.split(b"@@")
        filler = max(0, size - len(before) - len(after))
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(len(before) + filler + len(after)))
        h.end_headers()

        def write(piece: bytes) -> None:
            if chunked:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                h.wfile.write(piece)

        write(before)
        sent = 0
        block = b"a" * CHUNK
        while sent < filler:
            piece = block[:min(CHUNK, filler - sent)]
            write(piece)
            sent += len(piece)
        write(after)
        if chunked:
            h.wfile.write(b"0\r\n\r\n")
