"""Reading an NDJSON export the plain way (json, no cds code), so the tests' idea of "a patient's
data" does not come from the code under test."""
from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path


def resources_by_patient(folder: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if not path.name.endswith((".ndjson", ".ndjson.gz")):
            continue
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                if r["resourceType"] == "Patient":
                    found[r["id"]].append(r)
                else:
                    holder = r.get("patient") if r["resourceType"] == "Consent" else r.get("subject")
                    found[holder["reference"].split("/")[-1]].append(r)
    return dict(found)
