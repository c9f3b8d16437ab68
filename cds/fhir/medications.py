"""Read medication orders (MedicationRequest) and resolve what was ordered to RxNorm ingredients.

Order of resolution, first that succeeds wins:
1. the medication's codes: an RxNorm ingredient ("rxnorm-ingredient"), an RxNorm clinical/branded drug
   in the product table guidelines/rxnorm/products.tsv ("rxnorm-product"), a WHO ATC level-5 code in
   guidelines/rxnorm/atc.tsv ("atc"). Every code that resolves must name the same ingredients, or the
   order is refused (`conflicting-codes`), never settled to the first;
2. the RxNorm codes of the Medication's `ingredient[].itemCodeableConcept` ("medication-ingredient");
3. an ingredient name written as whole words in a display or text ("name"): "Codeine Phosphate 30 MG"
   is codeine, "Escitalopram 10 MG" is not citalopram, "Codeine-free cough syrup" is not codeine;
4. a brand name of the product table written as a whole word ("brand-name": "Plavix 75 mg tablet"),
   when every product of that brand has the same ingredients.
A display or text naming a knowledge-base drug the codes do not contain is a contradiction too.
Combination products resolve to every ingredient found. An order with no medication, a reference that
cannot be found, codes that contradict each other, or nothing recognisable is `unresolved` with no
ingredients (and `resolution` says why): never a guess. RxNorm is recognised by its URI (with or without
a trailing slash) and its OID (urn:oid:2.16.840.1.113883.6.88). SNOMED CT medication codes stay unresolved
(no cited SNOMED CT → RxNorm mapping is shipped) unless the text names the drug. MedicationRequests (R4) and
MedicationOrders (DSTU2, sent by CDS Hooks 1.0 clients) are read; other entries (NutritionOrder,
ServiceRequest, …) are passed over. With `patient_ref`, an order whose subject is another patient is not read.
"""
from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from cds.bundle import bundled_root
from cds.errors import CdsError
from cds.facts import Ingredient, MedicationOrder
from cds.fhir.mappings import FhirMappings, default_mappings
from cds.fhir.resources import Entry, Index, as_list, codings, collect, is_concept, patient_key, r4b_problem, text_of
from cds.memo import Memo
from cds.patient_ids import other_patients_resource

log = logging.getLogger("cds.fhir")

DEFAULT_PRODUCTS = bundled_root() / "guidelines" / "rxnorm" / "products.tsv"
DEFAULT_ATC = bundled_root() / "guidelines" / "rxnorm" / "atc.tsv"
_COLUMNS = ["rxcui", "tty", "name", "ingredient_rxcuis", "ingredient_names", "added"]
_ATC_COLUMNS = ["atc", "ingredient_rxcuis", "ingredient_names"]
ORDER_TYPES = ("MedicationRequest", "MedicationOrder")      # R4, DSTU2
_BRAND = re.compile(r"\[([^\[\]]+)\]\s*$")
# "codeine-free", "free of codeine", "without codeine", "no codeine", "non-codeine": the name is negated
_NEGATED_AFTER = re.compile(r"^\s*-?\s*free\b", re.I)
_NEGATED_BEFORE = re.compile(r"(?:\bwithout|\bno|\bnon|\bfree\s+of)[\s-]*$", re.I)


def _table_rows(path: Path, columns: list[str], what: str) -> list[tuple[int, str]]:
    """The (line number, line) rows of a tab-separated table after its header, which must be `columns`;
    comments and blank lines skipped. Unreadable or wrongly headed: CdsError naming the file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise CdsError(f"{path}: cannot read the {what} ({err.strerror})") from None
    rows = [(n, line) for n, line in enumerate(lines, 1) if line and not line.startswith("#")]
    if not rows or rows[0][1].split("\t") != columns:
        raise CdsError(f"{path}: the header must be {' '.join(columns)}")
    return rows[1:]


def load_product_table(path: Path | str | None = None) -> dict[str, tuple[Ingredient, ...]]:
    """products.tsv → {product RxCUI: ingredients}. A malformed table raises `CdsError` with its line."""
    path = Path(path) if path else DEFAULT_PRODUCTS
    table: dict[str, tuple[Ingredient, ...]] = {}
    for n, line in _table_rows(path, _COLUMNS, "RxNorm product table"):
        cells = next(csv.reader([line], delimiter="\t"))
        if len(cells) != len(_COLUMNS):
            raise CdsError(f"{path}:{n}: expected {len(_COLUMNS)} tab-separated columns, found {len(cells)}")
        rxcui, _, _, codes, names, _ = cells
        codes_, names_ = codes.split(";"), names.split(";")
        if not rxcui.isdigit() or len(codes_) != len(names_) or not all(c.isdigit() for c in codes_):
            raise CdsError(f"{path}:{n}: RxCUIs must be numbers and ingredient codes and names must pair up")
        if rxcui in table:
            raise CdsError(f"{path}:{n}: RxCUI {rxcui} is listed twice")
        table[rxcui] = tuple(Ingredient(c, nm) for c, nm in zip(codes_, names_, strict=False))
    return table


def load_brand_index(path: Path | str | None = None) -> dict[str, frozenset[str]]:
    """Brand names of the product table's branded drugs ("clopidogrel 75 MG Oral Tablet [Plavix]") →
    the ingredient codes they contain, folded. A brand whose products contain different ingredients
    (a brand family of single and combination products) is left out: its name alone does not say
    which was ordered."""
    path = Path(path) if path else DEFAULT_PRODUCTS
    seen: dict[str, set[frozenset[str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#") or line.startswith("rxcui\t"):
            continue
        cells = next(csv.reader([line], delimiter="\t"))
        brand = _BRAND.search(cells[2])
        if brand:
            seen.setdefault(brand.group(1).strip().casefold(), set()).add(frozenset(cells[3].split(";")))
    return {b: next(iter(sets)) for b, sets in seen.items() if len(sets) == 1}


def load_atc_table(path: Path | str | None = None) -> dict[str, tuple[Ingredient, ...]]:
    """atc.tsv → {ATC level-5 code: ingredients}. A malformed table raises `CdsError` with its line."""
    path = Path(path) if path else DEFAULT_ATC
    table: dict[str, tuple[Ingredient, ...]] = {}
    for n, line in _table_rows(path, _ATC_COLUMNS, "ATC table"):
        cells = line.split("\t")
        if len(cells) != 3 or len(cells[1].split(";")) != len(cells[2].split(";")):
            raise CdsError(f"{path}:{n}: expected an ATC code and paired ingredient codes and names")
        table[cells[0]] = tuple(Ingredient(c, nm) for c, nm in zip(cells[1].split(";"), cells[2].split(";"),
                                                                   strict=True))
    return table


# (codes, display, (ingredients, resolution, candidate ingredient codes)) of one product as written
_Product = tuple[tuple[str, ...], str | None, tuple[tuple[Ingredient, ...], str, frozenset[str]]]
_NOT_RESOLVED: tuple[tuple[Ingredient, ...], str, frozenset[str]] = ((), "", frozenset())


class MedicationResolver:
    """Built once at start-up. `ingredients`: lower-case ingredient name → RxNorm ingredient code (the
    knowledge base's drug list); `products`: the product table (default guidelines/rxnorm/products.tsv).

    `validate`: check each MedicationRequest against fhir.resources R4B (about 0.15 ms each) and log a
    warning when it does not validate; the order is read from its JSON either way.
    `skip_statuses`: orders that are not orders (entered in error, cancelled) are left out."""

    def __init__(self, ingredients: dict[str, str], products: dict[str, tuple[Ingredient, ...]] | None = None,
                 mappings: FhirMappings | None = None, *, validate: bool = True,
                 skip_statuses: Iterable[str] = ("entered-in-error", "cancelled"),
                 atc: dict[str, tuple[Ingredient, ...]] | None = None,
                 brands: dict[str, frozenset[str]] | None = None):
        m = mappings or default_mappings()
        self._rxnorm_systems = frozenset(s.rstrip("/") for s in m.rxnorm_systems)
        self._atc_systems = frozenset(s.rstrip("/") for s in m.atc_systems)
        self._snomed_systems = frozenset(s.rstrip("/") for s in m.snomed_systems)
        self._products = load_product_table() if products is None else dict(products)
        self._atc = load_atc_table() if atc is None else dict(atc)
        # brand (folded) → ingredient codes; a brand whose products differ in ingredients is left out
        self._brands = load_brand_index() if brands is None and products is None else dict(brands or {})
        self._brand_pattern = re.compile(r"(?<![a-z0-9])(" + "|".join(
            map(re.escape, sorted(self._brands, key=len, reverse=True))) + r")(?![a-z0-9])",
            re.I) if self._brands else None
        self._table_names = {i.rxnorm: i.name for found in self._products.values() for i in found}
        self._name_by_code: dict[str, str] = {}
        for name, code in sorted(ingredients.items(), key=lambda kv: (len(kv[0]), kv[0])):
            if not isinstance(name, str) or not isinstance(code, str) or not code.strip() or not name.strip():
                raise CdsError(f"ingredient list: '{name}' → '{code}' is not a name and an RxNorm code")
            self._name_by_code.setdefault(code.strip(), name.strip().lower())
        self._code_by_name = {name.strip().lower(): code.strip() for name, code in ingredients.items()}
        names = sorted(self._code_by_name, key=len, reverse=True)  # longest first at one position
        self._name_pattern = re.compile(r"(?<![a-z0-9])(" + "|".join(map(re.escape, names)) + r")(?![a-z0-9])",
                                        re.I) if names else None
        self._validate = validate
        self._skip_statuses = frozenset(skip_statuses)
        # Order texts are the EHR's drug dictionary's few thousand displays, and matching one against
        # every knowledge-base name was a tenth of a call: remembered (bounded, least recent out).
        self._names_in_texts: Memo[frozenset[str]] = Memo(8192)
        # What a product resolves to depends only on how it is written (codes, texts), never on who
        # ordered it: a formulary's few thousand products, each resolved once (a third of reading an order).
        self._by_product: Memo[_Product] = Memo(8192)

    # --- the request ------------------------------------------------------------------------------

    def read_orders(self, bundle_or_resources: Any, extra_resources: Any = (),
                    patient_ref: str | None = None) -> list[MedicationOrder]:
        """The MedicationRequests (and DSTU2 MedicationOrders) in `bundle_or_resources` (a Bundle such as
        draftOrders, a prefetched searchset, a resource, or a list), resolved. Medications referenced by
        `medicationReference` are looked up among the contained resources, the same input and
        `extra_resources`. With `patient_ref`, an order for another patient comes back unresolved with
        resolution `not-this-patient` (it is not used, and the audit says so)."""
        problems: list[str] = []
        entries = collect(bundle_or_resources, problems)
        extras = collect(extra_resources, problems) if extra_resources else []
        for p in problems:
            log.warning("medication orders: %s", p)
        index = Index(entries + extras)
        wanted = patient_key(patient_ref) if patient_ref else None
        orders = []
        for e in entries:
            if e.type not in ORDER_TYPES or e.container is not None:
                continue
            try:
                orders += self._read_order(e, index, wanted)
            except Exception:  # a resolver bug must not sink the request: record the order as unresolved
                log.exception("reading %s failed", e.key)
                orders.append(MedicationOrder(order_id=e.key, unresolved=True, resolution="internal-error",
                                              resource=e.resource))
        return orders

    def _read_order(self, e: Entry, index: Index, wanted: str | None) -> list[MedicationOrder]:
        """The order `e` (none when its status says it is not an order); another patient's comes back
        unresolved, named without that patient's id."""
        other = self._other_patient(e, index, wanted) if wanted else None
        name = e.key if other is None else other_patients_resource(e.key or e.type, other)
        status = e.resource.get("status")
        if isinstance(status, str) and status in self._skip_statuses:
            log.info("%s: status %s, not read as an order", name, status)
            return []
        if other is not None:
            return [MedicationOrder(order_id=name, unresolved=True, resolution="not-this-patient", resource=e.resource)]
        return [self._order(e, index)]

    @staticmethod
    def _other_patient(e: Entry, index: Index, wanted: str) -> str | None:
        """The patient the order names when that is another patient (R4 `subject`, DSTU2 `patient`), else
        None; "" for another patient we cannot name."""
        subject = e.resource.get("subject", e.resource.get("patient"))
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if not isinstance(ref, str) or not ref.strip() or ref.startswith(("urn:", "#")):
            target = index.resolve(subject, e) if isinstance(ref, str) and ref else None
            if target is None or target.type != "Patient" or target.key == wanted:
                return None
            return target.key or ""
        key = patient_key(ref)
        return None if key == wanted else (key or "")

    def _order(self, e: Entry, index: Index) -> MedicationOrder:
        res = e.resource
        if self._validate and e.type == "MedicationRequest":
            problem = r4b_problem(res)
            if problem:
                log.warning("%s does not validate as FHIR R4 (%s); read from its JSON", e.key or "MedicationRequest",
                            problem)
        concept, ingredient_concepts, texts, why = self._medication(e, index)
        codes, display, (ingredients, resolution, candidates) = self._product(concept, ingredient_concepts, texts,
                                                                              resolve=not why)
        if why:
            return MedicationOrder(order_id=e.key, codes=codes, display=display, unresolved=True, resolution=why,
                                   resource=res)
        if not ingredients:
            log.info("%s: medication not resolved (%s)", e.key, resolution)
            return MedicationOrder(order_id=e.key, codes=codes, display=display, unresolved=True,
                                   resolution=resolution, resource=res, candidates=self._ingredients(candidates))
        return MedicationOrder(order_id=e.key, ingredients=ingredients, codes=codes, display=display,
                               resolution=resolution, resource=res)

    def _medication(self, e: Entry, index: Index) -> tuple[Any, list, list[str], str | None]:
        """(medication CodeableConcept, ingredient CodeableConcepts, extra texts, why unresolvable)."""
        res = e.resource
        if "medicationCodeableConcept" in res:
            concept = res["medicationCodeableConcept"]
            return (concept, [], [], None) if is_concept(concept) else (None, [], [], "unreadable-medication")
        reference = res.get("medicationReference")
        if reference is None:
            return None, [], [], "no-medication"
        if not isinstance(reference, dict):
            return None, [], [], "unreadable-medication"
        shown = text_of(reference.get("display"))
        target = index.resolve(reference, e)
        if target is None or target.type != "Medication":
            # the reference's display can still name the drug; nothing else can
            return None, [], [shown] if shown else [], None if shown else "medication-reference-not-found"
        medication = target.resource
        concept = medication.get("code") if is_concept(medication.get("code")) else None
        items = [i.get("itemCodeableConcept") for i in as_list(medication.get("ingredient"))
                 if isinstance(i, dict) and is_concept(i.get("itemCodeableConcept"))]
        return concept, items, [shown] if shown else [], None

    # --- resolution ----------------------------------------------------------------------------------

    def _product(self, concept: Any, ingredient_concepts: list, texts: list[str], *, resolve: bool) -> _Product:
        """(codes, display, `_resolve`'s answer) of one product as written, remembered by its JSON."""
        def compute() -> _Product:
            found = self._resolve(concept, ingredient_concepts, texts) if resolve else _NOT_RESOLVED
            return self._codes(concept), _display(concept) or (texts[0] if texts else None), found

        try:
            key = orjson.dumps([concept, ingredient_concepts, texts, resolve], option=orjson.OPT_SORT_KEYS)
        except TypeError:       # a value JSON from elsewhere may hold that orjson does not encode (huge ints)
            return compute()
        return self._by_product.get(key, compute)

    def _system(self, system: str | None) -> str | None:
        """'rxnorm', 'atc', 'snomed' or None for a coding's system, tolerating a trailing slash."""
        if not system:
            return None
        bare = system.rstrip("/")
        if bare in self._rxnorm_systems:
            return "rxnorm"
        if bare in self._atc_systems:
            return "atc"
        if bare in self._snomed_systems:
            return "snomed"
        return None

    def resolve(self, concept: Any, ingredient_concepts: Sequence[Any] = (),
                texts: Sequence[str] = ()) -> tuple[tuple[Ingredient, ...], str]:
        """(ingredients, how) for a medication CodeableConcept, its Medication's ingredient concepts and
        any further texts; no ingredients means unresolved, and `how` says why."""
        ingredients, how, _ = self._resolve(concept, ingredient_concepts, texts)
        return ingredients, how

    def _resolve(self, concept: Any, ingredient_concepts: Sequence[Any] = (),
                 texts: Sequence[str] = ()) -> tuple[tuple[Ingredient, ...], str, frozenset[str]]:
        """`resolve`, and the ingredient codes that disagreeing codes or names point at."""
        # 1. the codes: each coding that resolves gives a set of ingredients; they must all agree
        found: list[tuple[frozenset[str], str]] = []
        kinds: set[str] = set()
        for system, code, _ in codings(concept):
            kind = self._system(system)
            if not code or kind is None:
                continue
            kinds.add(kind)
            if kind == "rxnorm" and code in self._name_by_code:
                found.append((frozenset({code}), "rxnorm-ingredient"))
            elif kind == "rxnorm" and code in self._products:
                found.append((frozenset(i.rxnorm for i in self._products[code]), "rxnorm-product"))
            elif kind == "atc" and code.upper() in self._atc:
                found.append((frozenset(i.rxnorm for i in self._atc[code.upper()]), "atc"))
        writing = _texts(concept) + [t for item in ingredient_concepts for t in _texts(item)] + [t for t in texts if t]
        named = self._names(writing)
        if found:
            if any(f != found[0][0] for f, _ in found[1:]) or named - found[0][0]:
                # codes naming different drugs, or a text naming a drug the code does not contain
                return (), "conflicting-codes", frozenset().union(named, *(f for f, _ in found))
            return self._ingredients(found[0][0]), found[0][1], frozenset()
        # 2. the Medication's ingredients: each one is a different ingredient, so they add up
        codes: set[str] = set()
        for item in ingredient_concepts:
            for s, c, _ in codings(item):
                if self._system(s) == "rxnorm" and c:
                    if c in self._name_by_code:
                        codes.add(c)
                    elif c in self._products:
                        codes.update(i.rxnorm for i in self._products[c])
        if codes:
            if named - codes:
                return (), "conflicting-codes", frozenset(named | codes)
            return self._ingredients(codes), "medication-ingredient", frozenset()
        # 3. ingredient names in the displays and texts
        if named:
            return self._ingredients(named), "name", frozenset()
        # 4. a brand name
        brands = self._brand_names(writing)
        if len(brands) == 1:
            return self._ingredients(next(iter(brands))), "brand-name", frozenset()
        if len(brands) > 1:
            return (), "conflicting-brand-names", frozenset().union(*brands)
        if "rxnorm" in kinds:
            why = "rxnorm-code-not-in-product-table"
        elif "atc" in kinds:
            why = "atc-code-not-a-knowledge-base-drug"
        elif "snomed" in kinds:
            why = "snomed-ct-not-mapped"
        elif codings(concept):
            why = "code-system-not-recognised"
        else:
            why = "not-resolved" if writing else "no-medication-code-or-text"
        return (), why, frozenset()

    def _names(self, writing: list[str]) -> set[str]:
        """Ingredient codes of the knowledge-base drug names written as whole words, unless negated
        ("codeine-free", "without codeine")."""
        codes: set[str] = set()
        for text in writing:
            codes.update(self._names_in(text))
        return codes

    def _names_in(self, text: str) -> frozenset[str]:
        return self._names_in_texts.get(text, lambda: self._names_in_text(text))

    def _names_in_text(self, text: str) -> frozenset[str]:
        if self._name_pattern is None:
            return frozenset()
        codes = set()
        for m in self._name_pattern.finditer(text):
            if _NEGATED_AFTER.match(text[m.end():]) or _NEGATED_BEFORE.search(text[:m.start()]):
                continue
            codes.add(self._code_by_name[m.group(1).lower()])
        return frozenset(codes)

    def _brand_names(self, writing: list[str]) -> set[frozenset[str]]:
        if self._brand_pattern is None:
            return set()
        return {self._brands[m.group(1).casefold()] for text in writing for m in self._brand_pattern.finditer(text)}

    def _ingredients(self, codes: Iterable[str]) -> tuple[Ingredient, ...]:
        named = (Ingredient(c, self._name_by_code.get(c) or self._table_names.get(c) or c) for c in codes)
        return tuple(sorted(named, key=lambda i: (i.name, i.rxnorm)))

    def _codes(self, concept: Any) -> tuple[str, ...]:
        """What was ordered, for audit and reports: 'rxnorm:309362', 'http://www.whocc.no/atc|B01AC04', 'text:…'."""
        out = []
        for system, code, _ in codings(concept):
            if code:
                out.append(f"rxnorm:{code}" if self._system(system) == "rxnorm"
                           else f"{system or '(no system)'}|{code}")
        if not out and isinstance(concept, dict) and text_of(concept.get("text")):
            out.append(f"text:{text_of(concept.get('text'))}")
        return tuple(out)



def _texts(concept: Any) -> list[str]:
    out = [d for _, _, d in codings(concept) if d]
    text = text_of(concept.get("text")) if isinstance(concept, dict) else None
    return out + ([text] if text else [])


def _display(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    return text_of(concept.get("text")) or next((d for _, _, d in codings(concept) if d), None)

