"""Start-up work every command pays: building the command line imports no database library (only
`cds report`, `cds db` and a recorded screening run need SQLAlchemy and Alembic)."""
from __future__ import annotations

import subprocess
import sys

from pgx_paths import REPO


def test_the_command_line_is_built_without_the_database_libraries() -> None:
    probe = ("import sys; from cds.cli import build_parser; build_parser(); import cds.screen.patients; "
             "print(sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


def test_the_store_commands_name_what_the_store_uses() -> None:
    """cds.store.cli spells these out so as not to import the modules that define them."""
    from cds.store import cli, engine, report

    assert cli.URL_ENV == engine.URL_ENV
    assert cli.FORMATS == report.FORMATS


def test_the_store_package_still_exports_its_names() -> None:
    import cds.store
    from cds.store.errors import StoreUnavailable
    from cds.store.store import Store

    assert cds.store.Store is Store and cds.store.StoreUnavailable is StoreUnavailable
    assert set(cds.store.__all__) <= set(dir(cds.store)) | set(cds.store._EXPORTS)


def test_a_screening_run_starts_its_readers_before_importing_the_decision_code() -> None:
    """Phase one's workers fork from a parent that has not yet imported the decision core (a quarter
    of a second), which it imports while they read."""
    probe = ("import sys; import cds.screen.run; "
             "print(sorted(m for m in ('cds.decision', 'cds.screen.patients', 'durable', 'pydantic') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


def test_a_database_already_migrated_is_opened_without_alembic(tmp_path) -> None:
    """Every service start and recorded screening run opens the audit database; when it is at the
    newest revision, Alembic (a tenth of a second to import) is not needed to say so."""
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    probe = ("import sys; from cds.store import migrate; from cds.store.engine import make_engine; "
             f"migrate.upgrade(make_engine({url!r})); print('alembic' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    again = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert (first.stdout.strip(), again.stdout.strip()) == ("True", "False")   # created by Alembic, then left alone
