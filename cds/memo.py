"""The one way pgx-cds remembers an answer in memory: `Memo(max_entries).get(key, compute)`.

What is remembered: answers that depend only on the loaded knowledge and on knowledge-level values
(lookup keys, diplotype texts, statement keys, prefetch templates, a text escaped for Markdown, a
product or an order text as written: what was ordered, not who or when), never on patient data; and
things read once per process (the default FHIR mappings, the workbench's example request).

The knowledge never changes under the object holding the table, so an answer cannot go stale. The
table is bounded: once full, new keys are computed every time and not kept, which the knowledge's own
vocabulary does not reach in practice (no eviction, so no lock and no order to keep). A table lives on
the object that owns the knowledge it answers from (the Engine, the CardRenderer, the GenomicReader,
the MedicationResolver), or at module level for a value of the package itself. functools.lru_cache and
functools.cache are not used: one idiom, with one bound and one rule about what may be kept.

The knowledge cache on disk (cds/knowledge/cache.py) is a different thing: validated knowledge kept
between processes, keyed by a digest of every file it was read from.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._table: dict[Hashable, V] = {}

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        try:
            return self._table[key]
        except KeyError:
            value = compute()
            if len(self._table) < self.max_entries:
                self._table[key] = value
            return value

    def __len__(self) -> int:
        return len(self._table)

    def clear(self) -> None:
        self._table.clear()
