"""Hostile cohorts: a gzip bomb (one line of 2 GiB from 2 MB), one patient with a million Observations,
links out of the input folder, subfolders, files that are not NDJSON, a file cut short. Each is listed in
unreadable.csv and everything else is screened; the run stays within a memory limit (RLIMIT_AS on
`cds screen` and every worker it forks) that holding the line or the patient would break; a run that
lost an input file or read nothing says so and exits non-zero."""
from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KEY = b"k" * 40
CDS = str(Path(sys.executable).parent / "cds")
GIB = 1 << 30
# Address space for `cds screen` and each of its two workers: their code and libraries take about
# 250 MiB; a 2 GiB line, or a million Observations (2.3 GB when parsed), cannot fit.
MEMORY_LIMIT = 768 << 20


def run(input_dir, out, **kwargs):
    from cds.screen.run import ScreenOptions, screen

    return screen(ScreenOptions(input_dir=input_dir, out=out, audit_key=KEY, progress=False, raw_ids=True, **kwargs))


def rows(out: Path, name: str) -> list[dict]:
    with open(out / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def patient_rows(out: Path) -> dict[str, list[tuple]]:
    """Every output's rows about patients, order aside (partitions differ with the input's size)."""
    found = {}
    for name in ("actionable.csv", "testing.csv", "carriers.csv", "withheld.csv", "no_card.csv"):
        found[name] = sorted(tuple(r.values()) for r in rows(out, name))
    found["unreadable.csv"] = sorted(tuple(r.values()) for r in rows(out, "unreadable.csv") if r["patient"])
    return found


@pytest.fixture(scope="module")
def reference(small_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run(small_cohort, out, workers=1)
    return out


def _gzip_bomb(path: Path, before: list[str], after: list[str], line_bytes: int) -> None:
    """Gzip members one after another read as one stream: one 16 MiB block of the line, compressed once
    and repeated, makes a 2 GiB line of a 2 MB file in no time."""
    block = 16 << 20
    repeated = gzip.compress(b"a" * block, compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress("".join(before).encode() + b'{"resourceType": "Observation", "note": "'))
        for _ in range(line_bytes // block):
            f.write(repeated)
        f.write(gzip.compress(b'"}\n' + "".join(after).encode()))


def _giant_patient(folder: Path, observations: int) -> None:
    line = ('{"resourceType":"Observation","id":"giant-%d","status":"final","code":{"text":"heart rate"},'
            '"subject":{"reference":"Patient/giant"},"valueQuantity":{"value":%d,"unit":"/min"}}\n')
    with open(folder / "Observation-giant.ndjson", "w") as f:
        f.writelines(line % (i, 60 + i % 50) for i in range(observations))
    with open(folder / "Patient-giant.ndjson", "w") as f:
        f.write(json.dumps({"resourceType": "Patient", "id": "giant", "birthDate": "1970-01-01"}) + "\n")


def test_a_gzip_bomb_and_a_giant_patient_are_cut_and_listed_under_a_memory_limit(small_cohort, reference, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for path in small_cohort.glob("*.ndjson"):
        if path.name != "Observation.ndjson":
            (folder / path.name).write_bytes(path.read_bytes())
    observations = (small_cohort / "Observation.ndjson").read_text().splitlines(keepends=True)
    _gzip_bomb(folder / "Observation.ndjson.gz", observations[:5], observations[5:], 2 * GIB)
    assert (folder / "Observation.ndjson.gz").stat().st_size < 4 << 20
    _giant_patient(folder, 1_000_000)
    out = tmp_path / "out"
    limit = f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); " \
            "os.execv(sys.argv[1], sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", limit, CDS, "screen", str(folder), "--out", str(out), "--workers", "2",
                           "--raw-ids", "--no-record", "--no-progress"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CDS_AUDIT_KEY": KEY.decode()})
    assert done.returncode == 0, done.stderr[-3000:]
    cut = {r["where"] or r["patient"]: r["reason"] for r in rows(out, "unreadable.csv") if "over the limit" in r["reason"]}
    assert cut == {
        "Observation.ndjson.gz:6": f"a line of {2 * GIB + 43:,} bytes, over the limit of {8 << 20:,} "
                                   "(--max-line-bytes); not read",
        "giant": cut.get("giant", "")}
    assert cut["giant"].startswith("the patient's resources are ") and "(1,000,001 lines), over the limit of " \
        f"{32 << 20:,} (--max-patient-bytes); patient not screened" in cut["giant"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["patients"] == 40 and summary["counts"]["patients_over_limit"] == 1
    assert summary["input"]["lines_over_limit"] == 1
    # Everything else is screened as if the hostile parts were not there (the lines after the bomb too).
    assert {k: [r for r in v if r[0] != "giant"] for k, v in patient_rows(out).items()} == patient_rows(reference)


def test_limits_are_options(small_cohort, reference, tmp_path):
    """A low per-patient limit cuts the larger patients (listed) and splits each partition into parts
    twice its size; every other patient gets exactly the rows of an unlimited run."""
    out = tmp_path / "out"
    result = run(small_cohort, out, workers=2, max_patient_bytes=2 << 10)
    over = {r["patient"] for r in rows(out, "unreadable.csv") if "--max-patient-bytes" in r["reason"]}
    assert 0 < len(over) == result.summary["counts"]["patients_over_limit"] < 40
    assert result.summary["counts"]["patients"] == 40 - len(over)
    assert {k: [r for r in v if r[0] not in over] for k, v in patient_rows(reference).items()} == \
        {k: [r for r in v if "--max-patient-bytes" not in r[-1]] for k, v in patient_rows(out).items()}
    from cds.cli import main

    assert main(["screen", str(small_cohort), "--out", str(tmp_path / "o"), "--max-line-bytes", "100"]) == 1


def test_links_subfolders_and_other_files_are_read_or_listed(small_cohort, reference, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "Patient.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "from-outside-7"}) + "\n")
    folder = tmp_path / "export"
    (folder / "labs").mkdir(parents=True)
    for path in small_cohort.glob("*.ndjson"):
        target = folder / "labs" / path.name if path.name == "Observation.ndjson" else folder / path.name
        target.write_bytes(path.read_bytes())
    (folder / "outsider.ndjson").symlink_to(outside / "Patient.ndjson")
    (folder / "elsewhere").symlink_to(outside)
    (folder / "same.ndjson").symlink_to(folder / "labs" / "Observation.ndjson")
    (folder / "labs" / "again").symlink_to(folder / "labs")
    (folder / "broken.ndjson").symlink_to(folder / "gone.ndjson")
    (folder / "manifest.json").write_text("{}")
    os.mkfifo(folder / "pipe.ndjson")
    out = tmp_path / "out"
    result = run(folder, out, workers=1)
    listed = {r["where"]: r["reason"] for r in rows(out, "unreadable.csv") if r["kind"] == "input"}
    assert listed == {
        "outsider.ndjson": "a symbolic link out of the input folder; not followed",
        "elsewhere": "a symbolic link out of the input folder; not followed",
        "labs/again": "a link to a folder read under another name; read once",
        "same.ndjson": "the same file as labs/Observation.ndjson; read once",
        "broken.ndjson": "could not be read (No such file or directory); not read",
        "manifest.json": "not a .ndjson or .ndjson.gz file; not read",
        "pipe.ndjson": "not a regular file (a pipe, socket or device); not read"}
    assert "labs/Observation.ndjson" in result.summary["input"]["files"]
    assert not any("from-outside-7" in (out / name).read_text() for name in os.listdir(out))
    assert result.summary["counts"]["patients"] == 40
    assert patient_rows(out) == patient_rows(reference)


def test_a_file_cut_short_is_a_loss_and_a_non_zero_exit(small_cohort, tmp_path, capsys):
    from cds.cli import main
    from cds.screen.run import ScreeningIncomplete

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "Patient.ndjson").write_bytes((small_cohort / "Patient.ndjson").read_bytes())
    whole = gzip.compress((small_cohort / "Observation.ndjson").read_bytes())
    (folder / "Observation.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ScreeningIncomplete, match=r"Observation.ndjson.gz could not be read to the end") as err:
        run(folder, tmp_path / "out", workers=1)
    assert err.value.result.summary["counts"]["patients"] == 40          # the rest is there, and said to be short
    assert (tmp_path / "out" / "actionable.csv").exists()
    assert main(["screen", str(folder), "--out", str(tmp_path / "o"), "--no-record"]) == 1
    assert "screening incomplete" in capsys.readouterr().err


def test_a_run_that_read_nothing_exits_non_zero(tmp_path, capsys):
    from cds.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "Patient.ndjson").write_text("")
    assert main(["screen", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--no-record"]) == 1
    assert "nothing was read from the 1 input file(s)" in capsys.readouterr().err
