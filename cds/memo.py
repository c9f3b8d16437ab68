"""Remembered answers of a function of the loaded knowledge and of knowledge-level values (lookup
keys, diplotype texts, statement keys, a product as written: what was ordered, not who or when),
never of patient data.

The knowledge never changes under the object holding the table, so an answer cannot go stale. The
table is bounded: once full, new keys are computed every time and not kept, which the knowledge's own
vocabulary does not reach in practice.
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
