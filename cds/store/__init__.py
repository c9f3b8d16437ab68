"""Storage and governance: the audit trail, CDS Hooks feedback, committee reports.

The service uses `Store` and the record types; the CLI uses `cli.register`. See
docs/governance.md for what is stored and why.

The names below load on first use (PEP 562): a command that never touches the database (`cds screen
--no-record`, `cds --version`) or a module that needs only the pseudonyms then does not import
SQLAlchemy and Alembic, about a third of a second of every start-up.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "CallRecord": "cds.store.records", "CardRecord": "cds.store.records", "FactRecord": "cds.store.records",
    "InvalidFeedback": "cds.store.errors", "StoreUnavailable": "cds.store.errors", "UnknownCard": "cds.store.errors",
    "Store": "cds.store.store", "format_report": "cds.store.report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cds.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
