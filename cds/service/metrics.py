"""Prometheus metrics of the service (GET /metrics), with prometheus-client.

Under gunicorn every worker is its own process, so `cds serve` points PROMETHEUS_MULTIPROC_DIR at a
fresh directory before this module is imported: each process writes its counters there and a scrape
of any worker sums them (prometheus-client's multiprocess mode). Without it (tests, `flask run`)
the metrics are this process's own.

Labels are bounded: service ids and rule ids come from the knowledge, indicators are three, and a
FHIR origin is one an issuer was configured to send (cds.service.fhir_servers) — an untrusted
origin is refused before it could become a label.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
REGISTRY = CollectorRegistry(auto_describe=True)

HOOK_REQUESTS = Counter("cds_hook_requests", "CDS Hooks calls answered, by service and HTTP status",
                        ["service", "status"], registry=REGISTRY)
HOOK_LATENCY = Histogram("cds_hook_latency_seconds", "Time to answer a CDS Hooks call, by service", ["service"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8), registry=REGISTRY)
CARDS = Counter("cds_cards", "Cards returned, by indicator and rule", ["indicator", "rule"], registry=REGISTRY)
FHIR_FETCH_ERRORS = Counter("cds_fhir_fetch_errors", "FHIR fetches that failed, by FHIR server origin",
                            ["origin"], registry=REGISTRY)
UNRESOLVED_ORDERS = Counter("cds_unresolved_orders", "Draft orders whose drug could not be identified, by service",
                            ["service"], registry=REGISTRY)
AUDIT_QUEUE = Gauge("cds_audit_queue_depth", "Audit entries waiting for the database writer (all workers)",
                    multiprocess_mode="livesum", registry=REGISTRY)


def fhir_origin(base_url: str) -> str:
    """The `origin` label of a FHIR server: scheme://host[:port] of its (normalised) base URL."""
    scheme, _, rest = base_url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def start(service_ids: Iterable[str], fhir_servers: Iterable[str]) -> None:
    """Every labelled counter the README documents, at 0 from the start for every label value known now
    (the services; the FHIR servers the trusted issuers list), so a dashboard or an alert on absence
    sees it before the first event. Called in the master before forking: its values file is summed too."""
    for service_id in service_ids:
        UNRESOLVED_ORDERS.labels(service_id)
    for base in fhir_servers:
        FHIR_FETCH_ERRORS.labels(fhir_origin(base))


class _SpoolCollector:
    """Spool and journal backlog, read from the folder at scrape time (every worker shares it)."""

    def __init__(self, spool_dir: Path | None):
        self.spool_dir = spool_dir

    def collect(self):
        files = GaugeMetricFamily("cds_audit_spool_files", "Audit spool files waiting for the database")
        size = GaugeMetricFamily("cds_audit_spool_bytes", "Bytes of audit entries spooled while the database is down")
        oldest = GaugeMetricFamily("cds_audit_spool_oldest_seconds",
                                   "How long the oldest spooled audit entries have waited for the database (0: none)")
        journal = GaugeMetricFamily("cds_audit_journal_bytes",
                                    "Bytes of audit entries journaled and not yet confirmed in the database")
        from cds.store.spool import SpoolBacklog, spool_backlog

        backlog = spool_backlog(self.spool_dir) if self.spool_dir is not None else SpoolBacklog(0, 0, 0.0, 0)
        files.add_metric([], backlog.spool_files)
        size.add_metric([], backlog.spool_bytes)
        oldest.add_metric([], backlog.oldest_spooled_seconds)
        journal.add_metric([], backlog.journal_bytes)
        yield files
        yield size
        yield oldest
        yield journal


def exposition(spool_dir: Path | None) -> tuple[bytes, str]:
    """The text exposition of every worker's metrics plus the spool's, and its content type."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    spool = CollectorRegistry(auto_describe=True)
    spool.register(_SpoolCollector(spool_dir))
    return generate_latest(registry) + generate_latest(spool), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn child_exit: drop a dead worker's live gauges (its counters stay counted)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
