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

        return create_app()


def serve(host: str = "127.0.0.1", port: int = 8080, workers: int | None = None, threads: int = 4) -> None:
    logging.basicConfig(level=os.environ.get("CDS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Build the app once before forking: a broken knowledge base stops here with the validator's
    # messages instead of crash-looping workers; with preload_app the workers share the compiled rules.
    _Gunicorn({
        "bind": f"{host}:{port}",
        "workers": workers or int(os.environ.get("CDS_WORKERS", "2")),
        "threads": threads,
        "worker_class": "gthread",
        "preload_app": True,
        "timeout": 30,
        "accesslog": "-",
        # No query strings in the access log: FHIR-style parameters could carry patient ids.
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
    }).run()
