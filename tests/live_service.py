"""The service on loopback: werkzeug's HTTP server on a thread, serving the app create_app built."""
from __future__ import annotations

import socket
import threading

import requests
from werkzeug.serving import make_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, app, port: int = 0):
        self.app = app
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def runtime(self):
        return self.app.extensions["pgx-cds"]

    def call(self, service_id: str, body, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/cds-services/{service_id}", json=body, timeout=30, **kwargs)

    def stop(self):
        self.server.shutdown()


class ServeProcess:
    """`cds serve` in a subprocess (gunicorn, its workers), as an operator runs it.

    Development mode, a SQLite audit trail, spool and local state in `workdir`, unless `env` says
    otherwise. `wait=False` for a start that is expected to fail (see `exit_code`)."""

    def __init__(self, workdir, env: dict | None = None, workers: int = 2, wait: bool = True,
                 port: int | None = None):
        import os
        import subprocess
        import sys
        from pathlib import Path

        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"serve-{self.port}.log"
        self.env = {**os.environ, "CDS_AUTH": "off", "CDS_AUDIT_KEY": "serve-test-audit-key-0123456789abcdef",
                    "DATABASE_URL": f"sqlite:///{self.workdir / 'audit.sqlite3'}",
                    "CDS_SPOOL_DIR": str(self.workdir / "spool"),
                    "CDS_LOCAL_STATE": str(self.workdir / "local-state.sqlite3"),
                    "CDS_LOG_LEVEL": "INFO", **(env or {})}
        for name in ("PROMETHEUS_MULTIPROC_DIR", "CDS_METRICS_DIR"):
            if not (env or {}).get(name):
                self.env.pop(name, None)
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cds.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            env=self.env, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            import time

            deadline = time.monotonic() + 90
            while not self.ready():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"cds serve did not start:\n{self.log}")
                time.sleep(0.2)
            self._wait_for_workers(workers)

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _wait_for_workers(self, count: int) -> None:
        import time

        deadline = time.monotonic() + 30
        while len(self.worker_pids()) < count and time.monotonic() < deadline:
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """gunicorn's worker processes: the children of the master."""
        from pathlib import Path

        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def exit_code(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def post(self, path: str, body, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.post(f"{self.url}{path}", json=body, **kwargs)

    def stop(self) -> str:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self._log.close()
        return self.log_path.read_text()
