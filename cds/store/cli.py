"""`cds report` and `cds db upgrade`, attached to the main CLI by `register(subparsers)`.

Each sub-command sets `func(args) -> int` (the exit status) with `set_defaults`; it prints its
output to stdout and raises CdsError for anything the user can fix (unreachable database, schema
not created yet).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING

from cds.errors import CdsError

if TYPE_CHECKING:
    from cds.settings import CoreSettings

# Named here, not imported from cds.store.engine and cds.store.report: building the command line must
# not import SQLAlchemy, which only `report` and `db` need (tests/store check both stay the same).
URL_ENV = "DATABASE_URL"
FORMATS = ("table", "json", "csv")

RuleIds = Callable[[], list[str]]


def register(subparsers, rule_ids: RuleIds | None = None) -> None:
    """Add `report` and `db` to an argparse subparsers object.

    `rule_ids` returns every rule id the knowledge base defines (for "rules that never fired");
    by default the knowledge base is loaded from its usual place."""
    report = subparsers.add_parser(
        "report", help="alerts, acceptance and override rates per rule, for the P&T committee",
        description="Report on CDS calls recorded in the audit database: alerts per rule, acceptance "
                    "and override rates (over cards issued), top override reasons, rules that never fired.")
    report.add_argument("--since", type=parse_since, metavar="DATE",
                        help="only calls at or after this ISO date or date-time (UTC if no zone given)")
    report.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    report.add_argument("--database-url", metavar="URL",
                        help=f"default: ${URL_ENV}, else sqlite:///./var/pgx-cds.sqlite3")
    report.set_defaults(func=lambda args: run_report(
        args, rule_ids or (lambda: knowledge_rule_ids(_settings(args), args.database_url))))

    db = subparsers.add_parser("db", help="audit database maintenance")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = db_commands.add_parser("upgrade", help="create or migrate the audit tables to the newest schema")
    upgrade.add_argument("--database-url", metavar="URL",
                         help=f"default: ${URL_ENV}, else sqlite:///./var/pgx-cds.sqlite3")
    upgrade.set_defaults(func=run_db_upgrade)


def parse_since(value: str) -> datetime:
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _settings(args: argparse.Namespace) -> CoreSettings:
    """The settings `cds` read at start (args.settings), or read now when a caller built the parser alone."""
    from cds.settings import CoreSettings

    return getattr(args, "settings", None) or CoreSettings.from_env()


def knowledge_rule_ids(settings: CoreSettings, database_url: str | None = None) -> list[str]:
    """Every rule id of the policy the service serves: the database's active version under governance,
    else the rules/ files (a rule the committee added never fires in the files' list, and one it
    removed would be listed as never firing)."""
    from cds.knowledge.loader import load_knowledge  # only the report needs the knowledge base
    from cds.policy.active import governed

    kb = load_knowledge(settings.knowledge_dir, cache_dir=settings.knowledge_cache_dir())
    if settings.policy == "database":
        kb, _ = governed(kb, database_url or settings.database_url)
    return [rule.id for rule in kb.rules]


def run_report(args: argparse.Namespace, rule_ids: RuleIds) -> int:
    from cds.store import migrate
    from cds.store.boundary import database_errors_said
    from cds.store.engine import make_engine
    from cds.store.report import build_report, format_report
    from cds.store.spool import spool_backlog
    from cds.store.store import database_description, spool_directory

    engine = make_engine(args.database_url)
    try:
        with database_errors_said(f"cannot read the audit database {database_description(args.database_url)}"), \
                engine.connect() as conn:
            if migrate.current_revision(conn) is None:
                raise CdsError(f"the audit database {database_description(args.database_url)} has no "
                               "tables yet: run `cds db upgrade` (the service also creates them at start-up)")
            report = build_report(conn, args.since, rule_ids())
    finally:
        engine.dispose()
    spool = spool_directory(_settings(args).spool_dir)
    if spool.is_dir():            # on the service's host: entries its database does not hold yet
        report["backlog"] = spool_backlog(spool).as_dict()
    sys.stdout.write(format_report(report, args.format))
    return 0


def run_db_upgrade(args: argparse.Namespace) -> int:
    from cds.store import migrate
    from cds.store.boundary import database_errors_said
    from cds.store.engine import make_engine
    from cds.store.store import database_description

    engine = make_engine(args.database_url)
    try:
        with database_errors_said(f"cannot migrate the audit database {database_description(args.database_url)}"):
            migrate.upgrade(engine)
            with engine.connect() as conn:
                revision = migrate.current_revision(conn)
    finally:
        engine.dispose()
    print(f"audit database {database_description(args.database_url)} is at schema revision {revision}")
    return 0
