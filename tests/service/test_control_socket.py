"""Issue 24 item 5: each `cds serve` has its own gunicorn control socket. gunicorn's default is one path
per user ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl), so a second instance took the
first one's and `gunicornc` spoke to the wrong server."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from live_service import ServeProcess

GUNICORNC = Path(sys.executable).with_name("gunicornc")


def control_socket(service: ServeProcess) -> str:
    found = re.findall(r"gunicorn control socket: (\S+)", service.log)
    assert len(found) == 1, service.log
    return found[0]


def workers_through(path: str) -> set[int]:
    answer = subprocess.run([str(GUNICORNC), "-s", path, "-c", "show workers", "-j"], capture_output=True,
                            text=True, timeout=30, check=True)
    return {w["pid"] for w in json.loads(answer.stdout)["workers"]}


def test_two_services_each_answer_on_their_own_control_socket(tmp_path):
    named = tmp_path / "ops" / "pgx.ctl"           # CDS_CONTROL_SOCKET names one; without it, a fresh one
    for folder in ("a", "b", "ops"):
        (tmp_path / folder).mkdir()
    first = ServeProcess(tmp_path / "a", workers=2)
    second = ServeProcess(tmp_path / "b", workers=1, env={"CDS_CONTROL_SOCKET": str(named)})
    try:
        fresh = control_socket(first)
        assert control_socket(second) == str(named) and fresh != str(named)
        assert workers_through(fresh) == set(first.worker_pids())
        assert workers_through(str(named)) == set(second.worker_pids())
    finally:
        first.stop()
        second.stop()
    assert not Path(fresh).parent.exists()         # the fresh one's private folder is removed at exit


def test_the_control_socket_can_be_turned_off(monkeypatch):
    from cds.service.server import _control_socket

    monkeypatch.setenv("CDS_CONTROL_SOCKET", "off")
    assert _control_socket() == ({"control_socket_disable": True}, None)
