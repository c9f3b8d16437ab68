"""Write FHIR resources as NDJSON (one resource per line, UTF-8), as FHIR Bulk Data files are."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import orjson

from cds.errors import CdsError


def write_ndjson(path: Path, resources: Iterable[dict]) -> int:
    """Write `resources` to `path` (through a temporary file, so a reader never sees half a file);
    returns how many were written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with open(tmp, "wb") as f:
            for resource in resources:
                f.write(orjson.dumps(resource) + b"\n")
                count += 1
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CdsError(f"cannot write {path}: {err.strerror}") from None
    return count
