"""`cds serve`: run the app under gunicorn (the production WSGI server), or Flask's for --dev-reload."""
from __future__ import annotations

import logging
import os

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


def serve(host: str = "127.0.0.1", port: int = 8080, workers: int | None = None, threads: int | None = None) -> None:
    logging.basicConfig(level=os.environ.get("CDS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = workers or int(os.environ.get("CDS_WORKERS", "2"))
    threads = threads or int(os.environ.get("CDS_THREADS", "1"))
    if os.environ.get("CDS_AUTH", "required").strip().lower() != "off" and workers > 1 \
            and not os.environ.get("CDS_REDIS_URL"):
        logging.getLogger("cds.service").warning(
            "JWT replay protection (jti) is per worker process: with %d workers a token replayed to another "
            "worker is not caught. Set CDS_REDIS_URL so all workers and replicas share one replay cache.", workers)
    # Build the app once before forking: a broken knowledge base stops here with the validator's
    # messages instead of crash-looping workers; with preload_app the workers share the compiled rules.
    _Gunicorn({
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        # One request per process by default (measured: threads contend for the GIL and double p99);
        # CDS_THREADS > 1 lets a worker answer other calls while one waits on a slow FHIR server.
        "worker_class": "gthread" if threads > 1 else "sync",
        "preload_app": True,
        "post_fork": _post_fork,
        "timeout": 30,
        "accesslog": "-",
        # No query strings in the access log: FHIR-style parameters could carry patient ids.
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
    }).run()
