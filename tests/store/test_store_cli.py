"""`cds report` and `cds db upgrade` as the main CLI will run them (argparse built here)."""
from __future__ import annotations

import argparse
import json

import pytest

from cds.errors import CdsError
from cds.store.cli import register
from store_support import call_record
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures


def parser(rule_ids=lambda: ["cpic-clopidogrel", "cpic-warfarin"]) -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="cds")
    register(cli.add_subparsers(dest="command", required=True), rule_ids=rule_ids)
    return cli


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


def test_db_upgrade_creates_the_schema_and_says_so(backend, db, capsys):
    from cds.store.migrate import head_revision

    assert head_revision() == "0006"
    assert run(["db", "upgrade", "--database-url", backend.direct_url]) == 0
    assert "schema revision 0006" in capsys.readouterr().out
    assert db.scalar("SELECT version_num FROM alembic_version") == "0006"
    assert run(["db", "upgrade", "--database-url", backend.direct_url]) == 0  # idempotent


def test_report_before_any_schema_is_a_clear_error(backend):
    with pytest.raises(CdsError, match="run `cds db upgrade`"):
        run(["report", "--database-url", backend.direct_url])


def test_report_from_the_command_line(open_store, backend, capsys):
    store = open_store()
    store.record_call(call_record(rule_id="cpic-clopidogrel", cards=2))
    store.close()
    assert run(["report", "--since", "2020-01-01", "--format", "json", "--database-url", backend.direct_url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["since"] == "2020-01-01T00:00:00+00:00"
    assert [(r["rule_id"], r["alerts"]) for r in report["rules"]] == [("cpic-clopidogrel", 2), ("cpic-warfarin", 0)]
    assert report["never_fired"] == ["cpic-warfarin"]

    assert run(["report", "--format", "csv", "--database-url", backend.direct_url]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("cpic-clopidogrel,2,0,0,2,")


def test_bad_arguments_are_usage_errors(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "--since", "last tuesday"])
    assert "not an ISO date" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "--format", "xml"])


def test_an_unreachable_database_is_a_clear_error():
    with pytest.raises(CdsError, match="cannot read the audit database"):
        run(["report", "--database-url", "postgresql+psycopg://postgres@127.0.0.1:9/none"])
