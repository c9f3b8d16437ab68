"""Log lines of the service (cds.service.logs): the current call's patient id is scrubbed from every
message, timestamps on every line, JSON when asked, a clear error for an unknown format."""
from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from cds.errors import CdsError
from cds.service import logs
from cds.patient_ids import scrubber


def _capture(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    config = logs.logging_config("INFO", fmt)
    config["handlers"]["stderr"]["stream"] = stream
    config["handlers"].pop("stdout")
    config["loggers"] = {}
    logging.config.dictConfig(config)
    return logging.getLogger("cds.test"), stream


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_current_patient_id_is_scrubbed_bare_and_as_a_reference():
    log, stream = _capture("text")
    token = logs.current_scrubber.set(scrubber("Patient/pat-77"))
    try:
        log.warning("fetch of Observation/%s-cyp for %s failed", "pat-77", "Patient/pat-77")
    finally:
        logs.current_scrubber.reset(token)
    log.warning("after the call: pat-77 is not this call's patient any more")
    lines = stream.getvalue().splitlines()
    assert "pat-77" not in lines[0] and "Observation/[patient]-cyp for Patient/[patient]" in lines[0]
    assert "pat-77" in lines[1]


def test_json_lines_have_time_level_logger_and_message():
    log, stream = _capture("json")
    log.info("hello %s", "world")
    record = json.loads(stream.getvalue().splitlines()[0])
    assert record["message"] == "hello world" and record["level"] == "INFO" and record["logger"] == "cds.test"
    assert record["time"][:2] == "20" and "T" in record["time"]


def test_text_lines_start_with_a_timestamp():
    log, stream = _capture("text")
    log.info("hello")
    line = stream.getvalue().splitlines()[0]
    assert line[:2] == "20" and line[10] == "T" and line.endswith("INFO cds.test: hello")


def test_an_unknown_format_is_a_clear_error():
    with pytest.raises(CdsError) as err:
        logs.log_format({"CDS_LOG_FORMAT": "xml"})
    assert "CDS_LOG_FORMAT" in str(err.value)
