"""Read medication orders (MedicationRequest) and resolve what was ordered to RxNorm ingredients.

Order of resolution, first that succeeds wins:
1. an RxNorm code that is itself one of the known ingredients ("rxnorm-ingredient");
2. an RxNorm clinical/branded drug in the product table guidelines/rxnorm/products.tsv ("rxnorm-product");
3. the RxNorm codes of the Medication's `ingredient[].itemCodeableConcept` ("medication-ingredient");
4. an ingredient name written as whole words in a display or text ("name"): "Codeine Phosphate 30 MG"
   is codeine, "Escitalopram 10 MG" is not citalopram.
Combination products resolve to every ingredient found. An order with no medication, a reference that
cannot be found, codes that contradict each other, or nothing recognisable is `unresolved` with no
ingredients (and `resolution` says why): never a guess. Only MedicationRequests are read; other entries
(NutritionOrder, ServiceRequest, …) are passed over.
"""
from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any, Iterable

from cds.bundle import bundled_root
from cds.errors import CdsError
from cds.facts import Ingredient, MedicationOrder
from cds.fhir.mappings import FhirMappings, default_mappings
from cds.fhir.resources import Entry, Index, as_list, codings, collect, is_concept, r4b_problem, text_of

log = logging.getLogger("cds.fhir")

DEFAULT_PRODUCTS = bundled_root() / "guidelines" / "rxnorm" / "products.tsv"
_COLUMNS = ["rxcui", "tty", "name", "ingredient_rxcuis", "ingredient_names", "added"]


def load_product_table(path: Path | str | None = None) -> dict[str, tuple[Ingredient, ...]]:
    """products.tsv → {product RxCUI: ingredients}. A malformed table raises `CdsError` with its line."""
    path = Path(path) if path else DEFAULT_PRODUCTS
    table: dict[str, tuple[Ingredient, ...]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise CdsError(f"{path}: cannot read the RxNorm product table ({err.strerror})") from None
    rows = [(n, line) for n, line in enumerate(lines, 1) if line and not line.startswith("#")]
    if not rows or rows[0][1].split("\t") != _COLUMNS:
        raise CdsError(f"{path}: the header must be {' '.join(_COLUMNS)}")
    for n, line in rows[1:]:
        cells = next(csv.reader([line], delimiter="\t"))
        if len(cells) != len(_COLUMNS):
            raise CdsError(f"{path}:{n}: expected {len(_COLUMNS)} tab-separated columns, found {len(cells)}")
        rxcui, _, _, codes, names, _ = cells
        codes_, names_ = codes.split(";"), names.split(";")
        if not rxcui.isdigit() or len(codes_) != len(names_) or not all(c.isdigit() for c in codes_):
            raise CdsError(f"{path}:{n}: RxCUIs must be numbers and ingredient codes and names must pair up")
        if rxcui in table:
            raise CdsError(f"{path}:{n}: RxCUI {rxcui} is listed twice")
        table[rxcui] = tuple(Ingredient(c, nm) for c, nm in zip(codes_, names_))
    return table


class MedicationResolver:
    """Built once at start-up. `ingredients`: lower-case ingredient name → RxNorm ingredient code (the
    knowledge base's drug list); `products`: the product table (default guidelines/rxnorm/products.tsv).

    `validate`: check each MedicationRequest against fhir.resources R4B (about 0.15 ms each) and log a
    warning when it does not validate; the order is read from its JSON either way.
    `skip_statuses`: orders that are not orders (entered in error, cancelled) are left out."""

    def __init__(self, ingredients: dict[str, str], products: dict[str, tuple[Ingredient, ...]] | None = None,
                 mappings: FhirMappings | None = None, *, validate: bool = True,
                 skip_statuses: Iterable[str] = ("entered-in-error", "cancelled")):
        m = mappings or default_mappings()
        self._rxnorm_systems = m.rxnorm_systems
        self._products = load_product_table() if products is None else dict(products)
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

    # --- the request ------------------------------------------------------------------------------

    def read_orders(self, bundle_or_resources: Any, extra_resources: Any = ()) -> list[MedicationOrder]:
        """The MedicationRequests in `bundle_or_resources` (a Bundle such as draftOrders, a prefetched
        searchset, a resource, or a list), resolved. Medications referenced by `medicationReference`
        are looked up among the contained resources, the same input and `extra_resources`."""
        problems: list[str] = []
        entries = collect(bundle_or_resources, problems)
        extras = collect(extra_resources, problems) if extra_resources else []
        for p in problems:
            log.warning("medication orders: %s", p)
        index = Index(entries + extras)
        orders = []
        for e in entries:
            if e.type != "MedicationRequest" or e.container is not None:
                continue
            status = e.resource.get("status")
            if status in self._skip_statuses:
                log.info("%s: status %s, not read as an order", e.key, status)
                continue
            try:
                orders.append(self._order(e, index))
            except Exception:  # a resolver bug must not sink the request: record the order as unresolved
                log.exception("reading %s failed", e.key)
                orders.append(MedicationOrder(order_id=e.key, unresolved=True, resolution="internal-error",
                                              resource=e.resource))
        return orders

    def _order(self, e: Entry, index: Index) -> MedicationOrder:
        res = e.resource
        if self._validate:
            problem = r4b_problem(res)
            if problem:
                log.warning("%s does not validate as FHIR R4 (%s); read from its JSON", e.key or "MedicationRequest", problem)
        concept, ingredient_concepts, texts, why = self._medication(e, index)
        codes = _codes(concept, self._rxnorm_systems)
        display = _display(concept) or (texts[0] if texts else None)
        if why:
            return MedicationOrder(order_id=e.key, codes=codes, display=display, unresolved=True, resolution=why,
                                   resource=res)
        ingredients, resolution = self.resolve(concept, ingredient_concepts, texts)
        if not ingredients:
            log.info("%s: medication not resolved (%s)", e.key, resolution)
            return MedicationOrder(order_id=e.key, codes=codes, display=display, unresolved=True,
                                   resolution=resolution, resource=res)
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

    def resolve(self, concept: Any, ingredient_concepts: list = (), texts: list[str] = ()) -> tuple[tuple[Ingredient, ...], str]:
        """(ingredients, how) for a medication CodeableConcept, its Medication's ingredient concepts and
        any further texts; no ingredients means unresolved, and `how` says why."""
        rx = [c for s, c, _ in codings(concept) if s in self._rxnorm_systems and c]
        # 1. the code is an ingredient
        found = [frozenset({c}) for c in rx if c in self._name_by_code]
        if found:
            return self._agreeing(found, "rxnorm-ingredient")
        # 2. the code is a product in the table
        found = [frozenset(i.rxnorm for i in self._products[c]) for c in rx if c in self._products]
        if found:
            return self._agreeing(found, "rxnorm-product")
        # 3. the Medication's ingredients: each one is a different ingredient, so they add up
        codes: set[str] = set()
        for item in ingredient_concepts:
            for s, c, _ in codings(item):
                if s in self._rxnorm_systems and c:
                    if c in self._name_by_code:
                        codes.add(c)
                    elif c in self._products:
                        codes.update(i.rxnorm for i in self._products[c])
        if codes:
            return self._ingredients(codes), "medication-ingredient"
        # 4. ingredient names in the displays and texts
        writing = _texts(concept) + [t for item in ingredient_concepts for t in _texts(item)] + [t for t in texts if t]
        codes = set()
        if self._name_pattern is not None:
            for text in writing:
                for m in self._name_pattern.finditer(text):
                    codes.add(self._code_by_name[m.group(1).lower()])
        if codes:
            return self._ingredients(codes), "name"
        return (), "not-resolved" if (rx or writing) else "no-medication-code-or-text"

    def _agreeing(self, sets: list[frozenset[str]], how: str) -> tuple[tuple[Ingredient, ...], str]:
        """The codings of one concept are translations of one product: if they resolve differently,
        the order is not resolved (`conflicting-codes`) rather than resolved to a guess."""
        if any(s != sets[0] for s in sets[1:]):
            return (), "conflicting-codes"
        return self._ingredients(sets[0]), how

    def _ingredients(self, codes: Iterable[str]) -> tuple[Ingredient, ...]:
        named = (Ingredient(c, self._name_by_code.get(c) or self._table_names.get(c) or c) for c in codes)
        return tuple(sorted(named, key=lambda i: (i.name, i.rxnorm)))


def _texts(concept: Any) -> list[str]:
    out = [d for _, _, d in codings(concept) if d]
    text = text_of(concept.get("text")) if isinstance(concept, dict) else None
    return out + ([text] if text else [])


def _display(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    return text_of(concept.get("text")) or next((d for _, _, d in codings(concept) if d), None)


def _codes(concept: Any, rxnorm_systems: frozenset[str]) -> tuple[str, ...]:
    out = []
    for system, code, _ in codings(concept):
        if code:
            out.append(f"rxnorm:{code}" if system in rxnorm_systems else f"{system or '(no system)'}|{code}")
    if not out and isinstance(concept, dict) and text_of(concept.get("text")):
        out.append(f"text:{text_of(concept.get('text'))}")
    return tuple(out)
