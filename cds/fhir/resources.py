"""Small, defensive readers for FHIR R4 JSON: flatten Bundles, resolve references, read codings and
dates without trusting the shape of anything.

Real payloads are imperfect (a `category` object where R4 wants a list, no `intent`, doseQuantity on
Dosage), so the reader takes the few fields a decision needs straight from the dict, checking each
one's type, and uses the fhir.resources R4B models to *explain* what is wrong, not to gate reading.
Nothing here logs values: resource ids and field names only.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from pydantic import ValidationError

MAX_DEPTH = 4            # Bundles inside Bundles (a prefetch of searchsets) go no deeper than this


@dataclass
class Entry:
    """One resource found in the input, with where it came from."""

    resource: dict
    key: str | None                       # "Observation/abc" (or "DiagnosticReport/r#abc" if contained)
    full_url: str | None = None
    container: Entry | None = None      # the resource that contains this one
    bundle: int | None = None             # id() of the innermost Bundle it came in (None: given alone)
    reports: list[Entry] = field(default_factory=list)   # DiagnosticReports this result belongs to

    @property
    def type(self) -> str:
        kind = self.resource.get("resourceType")
        return kind if isinstance(kind, str) else ""


def collect(items: Any, problems: list[str]) -> list[Entry]:
    """Every resource in `items` (a resource, a Bundle, or an iterable of either), Bundles and
    Parameters unpacked and contained resources listed after their container. Non-objects are
    reported in `problems`."""
    out: list[Entry] = []
    if isinstance(items, dict):
        items = [items]
    elif not isinstance(items, Iterable) or isinstance(items, (str, bytes)):
        problems.append(f"input of type {type(items).__name__} is not a FHIR resource or a list of them")
        return out
    for i, item in enumerate(items):
        _collect_one(item, None, None, f"item {i}", 0, out, problems)
    return out


def _collect_one(item: Any, full_url: str | None, bundle: int | None, where: str, depth: int, out: list[Entry],
                 problems: list[str]) -> None:
    if not isinstance(item, dict):
        problems.append(f"{where}: not a JSON object")
        return
    rtype = item.get("resourceType")
    if not isinstance(rtype, str):
        problems.append(f"{where}: no resourceType")
        return
    if rtype == "Bundle":
        if depth >= MAX_DEPTH:
            problems.append(f"{where}: Bundles nested deeper than {MAX_DEPTH} levels are not read")
            return
        entries = item.get("entry", [])
        if not isinstance(entries, list):
            problems.append(f"{where}: Bundle.entry is not a list")
            return
        for j, entry in enumerate(entries):
            if not isinstance(entry, dict):
                problems.append(f"{where} entry {j}: not a JSON object")
                continue
            if "resource" not in entry:
                continue  # a searchset/transaction entry without a resource (e.g. a request only)
            url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
            _collect_one(entry["resource"], url, id(item), f"{where} entry {j}", depth + 1, out, problems)
        return
    if rtype == "Parameters":   # results of an operation ($find-subject-haplotypes, …) carry resources
        if depth >= MAX_DEPTH:
            problems.append(f"{where}: Parameters nested deeper than {MAX_DEPTH} levels are not read")
            return
        for j, resource in enumerate(_parameter_resources(item.get("parameter"), 0)):
            _collect_one(resource, None, id(item), f"{where} parameter resource {j}", depth + 1, out, problems)
        return
    entry = Entry(item, reference_key(item), full_url, bundle=bundle)
    out.append(entry)
    contained = item.get("contained")
    if isinstance(contained, list):
        for child in contained:
            if (isinstance(child, dict) and isinstance(child.get("resourceType"), str)
                    and isinstance(child.get("id"), str)):
                key = f"{entry.key}#{child['id']}" if entry.key else f"#{child['id']}"
                out.append(Entry(child, key, None, container=entry, bundle=bundle))


def _parameter_resources(parameters: Any, depth: int) -> Iterator[Any]:
    for p in as_list(parameters):
        if isinstance(p, dict):
            if "resource" in p:
                yield p["resource"]
            if depth < MAX_DEPTH:
                yield from _parameter_resources(p.get("part"), depth + 1)


def reference_key(resource: dict) -> str | None:
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rtype, str) and isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return None


def type_id_tail(url: str) -> str | None:
    """'http://server/fhir/Observation/abc/_history/2' → 'Observation/abc'; None when not that shape."""
    parts = url.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-1] and parts[-2][:1].isupper() and parts[-2].isalpha():
        return f"{parts[-2]}/{parts[-1]}"
    return None


def patient_key(reference: Any) -> str | None:
    """'Patient/123', '123', 'http://x/fhir/Patient/123/_history/2' → 'Patient/123'; None otherwise."""
    if not isinstance(reference, str) or not reference.strip():
        return None
    ref = reference.strip()
    if "/" not in ref:
        return f"Patient/{ref}"
    tail = type_id_tail(ref)
    return tail if tail and tail.startswith("Patient/") else None


class Index:
    """Resolves references between the collected resources: relative ("Observation/x"), absolute URLs
    and fullUrls (urn:uuid:…), and "#id" inside the referring resource's container.

    A reference is looked up in the referring resource's own Bundle first (two Bundles may reuse an
    id for different resources); outside it only when exactly one resource, or several identical
    copies, carry that key. Otherwise it stays unresolved rather than pointing at a stranger."""

    def __init__(self, entries: list[Entry]):
        self._by_key: dict[str, list[Entry]] = {}
        self._contained: dict[tuple[int, str], Entry] = {}
        for e in entries:
            if e.container is None:
                keys = {e.key, e.full_url}
                if e.full_url:
                    keys.add(type_id_tail(e.full_url))
                for k in {k for k in keys if k is not None}:
                    self._by_key.setdefault(k, []).append(e)
            else:
                self._contained.setdefault((id(e.container), "#" + e.resource["id"]), e)

    def resolve(self, reference: Any, origin: Entry) -> Entry | None:
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(ref, str) or not ref:
            return None
        if ref.startswith("#"):
            return self._contained.get((id(origin.container or origin), ref))
        found = self._by_key.get(ref)
        if found is None:
            tail = type_id_tail(ref)
            found = self._by_key.get(tail) if tail else None
        if not found:
            return None
        home = (origin.container or origin).bundle
        local = [e for e in found if e.bundle == home]
        candidates = local or found
        first = candidates[0]
        if all(c is first or c.resource == first.resource for c in candidates[1:]):
            return first
        return None


# --- typed field access ----------------------------------------------------------------------------

def as_list(value: Any) -> list:
    """A FHIR array: a list, or nothing. (A single object where a list belongs is tolerated.)"""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def text_of(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def codings(concept: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, display) of each coding of a CodeableConcept; malformed codings are left out."""
    if not isinstance(concept, dict):
        return []
    out = []
    for c in as_list(concept.get("coding")):
        if isinstance(c, dict):
            out.append((text_of(c.get("system")), text_of(c.get("code")), text_of(c.get("display"))))
    return out


def concept_keys(concept: Any) -> list[tuple[str, str]]:
    return [(s, c) for s, c, _ in codings(concept) if s and c]


def concept_texts(concept: Any) -> list[str]:
    """Human-readable texts of a CodeableConcept: each display, then the text."""
    out = [d for _, _, d in codings(concept) if d]
    text = text_of(concept.get("text")) if isinstance(concept, dict) else None
    if text:
        out.append(text)
    return out


def is_concept(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and ("coding" in value or "text" in value)


# --- dates -------------------------------------------------------------------------------------------

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def parse_datetime(value: Any) -> datetime | None:
    """FHIR date/dateTime/instant → aware datetime (partial dates → their first moment, UTC when no
    zone is given); None when absent or not a date."""
    if not isinstance(value, str):
        return None
    m = _PARTIAL.match(value)
    try:
        if m:
            return datetime(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def effective_of(resource: dict) -> tuple[datetime | None, bool]:
    """effectiveDateTime, effectivePeriod.start or effectiveInstant, else issued. The flag says whether
    a date field was present but unreadable."""
    bad = False
    candidates = [resource.get("effectiveDateTime"), resource.get("effectiveInstant")]
    period = resource.get("effectivePeriod")
    if isinstance(period, dict):
        candidates.append(period.get("start"))
    candidates.append(resource.get("issued"))
    for value in candidates:
        if value is None:
            continue
        parsed = parse_datetime(value)
        if parsed is not None:
            return parsed, bad
        bad = True
    return None, bad


# --- R4B validation (diagnostics only) ----------------------------------------------------------------

_MODELS: dict[str, Any] = {}


def r4b_problem(resource: dict) -> str | None:
    """None when `resource` validates as FHIR R4 (fhir.resources.R4B), else a short description of the
    first errors: field paths and pydantic's message, never the offending values."""
    rtype = resource.get("resourceType")
    model = _model(rtype) if isinstance(rtype, str) else None
    if model is None:
        return None
    try:
        model.model_validate(resource)
    except ValidationError as err:
        errors = err.errors()
        shown = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return shown + more
    except (TypeError, ValueError) as err:  # fhir.resources raises these for some malformed inputs
        return type(err).__name__
    return None


def _model(rtype: str) -> Any:
    if rtype not in _MODELS:
        try:
            module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
            _MODELS[rtype] = getattr(module, rtype)
        except (ImportError, AttributeError):
            _MODELS[rtype] = None
    return _MODELS[rtype]


def _loc(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(resource)"
