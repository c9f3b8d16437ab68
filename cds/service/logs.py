"""The service's log lines: a timestamp on every line (ours and gunicorn's, access log included),
plain text or one JSON object per line (CDS_LOG_FORMAT=json, python-json-logger), and the current
call's patient id scrubbed from every message logged while the call runs."""
from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable

from cds.errors import CdsError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The patient id scrubber of the call being answered on this thread (cds.store.records.scrubber).
current_scrubber: contextvars.ContextVar[Callable[[str | None], str | None] | None] = contextvars.ContextVar(
    "pgx_cds_patient_scrubber", default=None)


class PatientScrubFilter(logging.Filter):
    """Replaces the current call's patient id (bare or as Patient/X) in a record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub = current_scrubber.get()
        if scrub is not None:
            message = record.getMessage()
            cleaned = scrub(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def log_format(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = env.get("CDS_LOG_FORMAT", "text").strip().lower() or "text"
    if value not in ("text", "json"):
        raise CdsError(f"CDS_LOG_FORMAT={value!r}: use 'text' or 'json'")
    return value


def formatter_config(fmt: str) -> dict:
    if fmt == "json":
        return {"()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
                "datefmt": "%Y-%m-%dT%H:%M:%S%z"}
    return {"format": TEXT_FORMAT, "datefmt": "%Y-%m-%dT%H:%M:%S%z"}


def logging_config(level: str, fmt: str) -> dict:
    """A dictConfig for the root logger and gunicorn's error and access loggers (gunicorn's
    logconfig_dict), so that every line has the same form and a timestamp."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"patient": {"()": PatientScrubFilter}},
        "formatters": {"cds": formatter_config(fmt)},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "cds", "filters": ["patient"],
                       "stream": "ext://sys.stderr"},
            "stdout": {"class": "logging.StreamHandler", "formatter": "cds", "filters": ["patient"],
                       "stream": "ext://sys.stdout"},
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }


def configure(level: str | None = None, fmt: str | None = None) -> dict:
    import logging.config

    config = logging_config(level or os.environ.get("CDS_LOG_LEVEL", "INFO"), fmt or log_format())
    logging.config.dictConfig(config)
    return config
