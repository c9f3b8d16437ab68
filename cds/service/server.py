"""`cds serve`: run the app under gunicorn (the production WSGI server), or Flask's for --dev-reload."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from cds.service.app import create_app

        self.application = create_app()
        return self.application


def _post_fork(server, worker) -> None:
    # The app (knowledge, compiled rules) was built once in the master and is shared copy-on-write;
    # the audit store's writer thread and connections must be the worker's own.
    runtime = server.app.application.extensions["pgx-cds"]
    if runtime.store is not None:
        runtime.store.after_fork()
    runtime.policy.after_fork()     # catch up with the active policy version before the first call


def _child_exit(server, worker) -> None:
    from cds.service import metrics

    metrics.worker_exited(worker.pid)


def _metrics_directory() -> str:
    """Where the workers' metrics files go (prometheus-client multiprocess mode): CDS_METRICS_DIR or
    PROMETHEUS_MULTIPROC_DIR, emptied now (its files are one run's), else a fresh temporary directory."""
    configured = os.environ.get("CDS_METRICS_DIR") or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return str(path)
    return tempfile.mkdtemp(prefix="pgx-cds-metrics-")


def _control_socket() -> tuple[dict, str | None]:
    """gunicorn's control socket settings, and a directory of ours to remove at exit. gunicorn's default
    ($XDG_RUNTIME_DIR/gunicorn.ctl, else ~/.gunicorn/gunicorn.ctl) is one path for every instance of a
    user, so a second `cds serve` took the first one's: each gets its own, CDS_CONTROL_SOCKET or a fresh
    private directory; `off` turns it off."""
    configured = os.environ.get("CDS_CONTROL_SOCKET", "").strip()
    if configured.lower() == "off":
        return {"control_socket_disable": True}, None
    if configured:
        return {"control_socket": configured}, None
    directory = tempfile.mkdtemp(prefix="pgx-cds-control-")   # mode 0700: only this user may connect
    return {"control_socket": str(Path(directory) / "gunicorn.ctl")}, directory


def serve(host: str = "127.0.0.1", port: int = 8080, workers: int | None = None, threads: int | None = None) -> None:
    from cds.service import logs

    log_config = logs.configure()
    workers = workers or int(os.environ.get("CDS_WORKERS", "2"))
    threads = threads or int(os.environ.get("CDS_THREADS", "1"))
    # Before anything imports prometheus_client: it picks its multiprocess storage at import.
    owns_metrics_dir = not (os.environ.get("CDS_METRICS_DIR") or os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_directory()
    control, control_dir = _control_socket()
    if "control_socket" in control:
        logging.getLogger("cds.service").info("gunicorn control socket: %s (gunicornc -s %s)",
                                              control["control_socket"], control["control_socket"])
    # Build the app once before forking: a broken knowledge base stops here with the validator's
    # messages instead of crash-looping workers; with preload_app the workers share the compiled rules.
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        # One request at a time per process by default (measured: threads contend for the GIL and double
        # p99); CDS_THREADS > 1 lets a worker answer other calls while one waits on a slow FHIR server.
        # The worker's event loop reads each request whole before a thread takes it, so idle and slow
        # clients never hold a thread (cds.service.worker; CDS_CLIENT_TIMEOUT bounds them).
        "worker_class": "cds.service.worker.BufferedThreadWorker",
        # Idle kept-alive connections cost a socket, not a thread; short, since an EHR that calls again
        # within seconds gains from it and one that does not should not hold sockets.
        "keepalive": 5,
        # Every answer goes through the worker's buffer (cds.service.worker.AnswerBuffer), files too.
        "sendfile": False,
        "preload_app": True,
        "post_fork": _post_fork,
        "child_exit": _child_exit,
        "timeout": 30,
        "accesslog": "-",
        # No query strings in the access log: FHIR-style parameters could carry patient ids.
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
        "logconfig_dict": log_config,
        # Large enough that an oversized Authorization header reaches the app, which answers it with a
        # JSON 401 (cds.service.auth.verifier.MAX_AUTHORIZATION_HEADER), instead of gunicorn's plain-text 400.
        "limit_request_field_size": 65536,
        **control,
    }
    try:
        _Gunicorn(options).run()
    finally:   # gunicorn's master ends in sys.exit
        if owns_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if control_dir:
            shutil.rmtree(control_dir, ignore_errors=True)
