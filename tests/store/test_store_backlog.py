"""What waits on the host's disk for the database is visible: in the store's backlog, /metrics, and the
committee report (`store.report`, `cds report` on the service's host), which says it does not count it yet."""
from __future__ import annotations

import argparse

from prometheus_client.parser import text_string_to_metric_families

from cds.service import metrics
from cds.store import format_report
from cds.store.cli import register
from store_fixtures import backend, open_store  # noqa: F401 - pytest fixtures
from store_support import call_record


def _cds_report(url: str) -> int:
    cli = argparse.ArgumentParser(prog="cds")
    register(cli.add_subparsers(dest="command", required=True), rule_ids=lambda: ["cpic-clopidogrel"])
    args = cli.parse_args(["report", "--database-url", url])
    return args.func(args)


def test_a_report_says_what_still_waits_in_the_spool(backend, open_store, tmp_path, monkeypatch, capsys):
    store = open_store(retry_interval=600)           # no replay but the one this test asks for
    store.record_call(call_record("pat-counted"))
    assert store.flush()
    assert store.backlog().spool_files == 0 and "Not counted yet" not in format_report(store.report())

    backend.down()
    store.record_call(call_record("pat-waiting"))
    assert store.flush(timeout=60)                   # spooled
    backend.up()                                     # the database is back; the spool is not replayed yet
    report = store.report()
    assert report["calls"] == 1 and report["backlog"]["spool_files"] >= 1
    assert "Not counted yet: audit entries of this host wait in its spool" in format_report(report)
    exposition = metrics.exposition(store.spool.directory)[0].decode()
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    assert families["cds_audit_spool_files"].samples[0].value >= 1
    assert families["cds_audit_spool_oldest_seconds"].samples[0].value >= 0

    monkeypatch.setenv("CDS_SPOOL_DIR", str(tmp_path / "spool"))      # `cds report` on the service's host
    assert _cds_report(backend.direct_url) == 0
    assert "Not counted yet" in capsys.readouterr().out

    assert store.replay_now(timeout=30)
    report = store.report()
    assert report["calls"] == 2 and report["backlog"]["spool_files"] == 0
    assert "Not counted yet" not in format_report(report)
