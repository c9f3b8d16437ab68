"""Storage and governance: the audit trail, CDS Hooks feedback, committee reports.

The service uses `Store` and the record types; the CLI uses `cli.register`. See
docs/governance.md for what is stored and why.
"""
from cds.store.errors import InvalidFeedback, StoreUnavailable, UnknownCard
from cds.store.records import CallRecord, CardRecord, FactRecord
from cds.store.report import format_report
from cds.store.store import Store

__all__ = ["CallRecord", "CardRecord", "FactRecord", "InvalidFeedback", "Store", "StoreUnavailable",
           "UnknownCard", "format_report"]
