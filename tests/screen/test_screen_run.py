"""A screening run's engines, outputs and inputs: dask on a local cluster gives the embedded run's
files; pseudonyms by default; an offline report; bad input reported with file and line."""
from __future__ import annotations

import csv
import gzip
import json
import re

import pytest

from ndjson_data import resources_by_patient

KEY = b"k" * 40


def run(input_dir, out, **kwargs):
    from cds.screen.run import ScreenOptions, screen

    return screen(ScreenOptions(input_dir=input_dir, out=out, audit_key=KEY, progress=False, **kwargs))


OUTPUTS = ("actionable.csv", "testing.csv", "carriers.csv", "unreadable.csv", "withheld.csv", "no_card.csv")


@pytest.fixture(scope="module")
def embedded(small_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    return out, run(small_cohort, out, workers=1).summary


def test_dask_on_a_local_cluster_gives_the_embedded_files(small_cohort, embedded, tmp_path):
    out, summary = embedded
    result = run(small_cohort, tmp_path, workers=2, engine="dask")
    assert result.summary["engine"] == "dask" and result.summary["counts"] == summary["counts"]
    for name in OUTPUTS:
        assert (tmp_path / name).read_text() == (out / name).read_text(), name


def test_patients_appear_as_audit_pseudonyms_only(small_cohort, embedded):
    from cds.store.pseudonym import PatientHasher

    out, _ = embedded
    ids = set(resources_by_patient(small_cohort))
    pseudonyms = {PatientHasher(KEY)(pid) for pid in ids}
    listed = set()
    for name in OUTPUTS:
        with open(out / name, newline="") as f:
            listed |= {r["patient"] for r in csv.DictReader(f) if r["patient"]}
    assert listed and listed <= pseudonyms
    everything = "".join((out / n).read_text() for n in (*OUTPUTS, "summary.json", "report.html"))
    assert not any(pid in everything for pid in ids)


def test_an_active_drug_without_a_card_is_listed_with_the_reason(embedded):
    out, _ = embedded

    def pairs(name):
        with open(out / name, newline="") as f:
            return [(r["patient"], r["drug"], r.get("reason")) for r in csv.DictReader(f)]

    carded = {(p, d) for p, d, _ in pairs("actionable.csv") + pairs("testing.csv")}
    silent = pairs("no_card.csv")
    assert silent and not {(p, d) for p, d, _ in silent} & carded
    assert all(re.search(r"no card under the local policy|result on file and no pre-test rule|no local rule|"
                         r"no CPIC recommendation matches", why) for _, _, why in silent)


def test_report_is_one_offline_file_with_plots(embedded):
    out, summary = embedded
    html = (out / "report.html").read_text()
    assert "<script" not in html and not re.search(r"""(src|href)=["']?https?:""", html)
    assert html.count("<svg") == 3 and "<rect" in html
    assert f"<td class=\"n\">{summary['counts']['patients']}</td>" in html
    gene, phenotype = next(iter(summary["gene_phenotype"])).split("|")
    assert f"{gene} — {phenotype}" in html


def test_summary_counts_agree_with_the_files(embedded):
    out, summary = embedded
    for name in OUTPUTS:
        with open(out / name, newline="") as f:
            assert summary["counts"][f"rows_{name[:-4]}"] == sum(1 for _ in csv.DictReader(f))
    assert summary["input"]["digest"].startswith("sha256:") and summary["knowledge_version"]


def test_unreadable_lines_are_listed_with_file_and_line(small_cohort, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    lines = (small_cohort / "Observation.ndjson").read_text().splitlines()
    lines.insert(2, "{not json")
    lines.insert(4, json.dumps({"resourceType": "Observation", "id": "orphan", "status": "final"}))
    with gzip.open(folder / "Observation.ndjson.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    (folder / "Patient.ndjson").write_text((small_cohort / "Patient.ndjson").read_text())
    result = run(folder, tmp_path / "out", workers=1)
    with open(tmp_path / "out" / "unreadable.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "input"]
    assert {(r["where"], r["reason"].split(" (")[0]) for r in rows} == {
        ("Observation.ndjson.gz:3", "not JSON"),
        ("Observation/orphan", "Observation names no patient")}
    assert result.summary["counts"]["patients"] == 40


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    from cds.cli import main

    assert main(["screen", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-record"]) == 1
    assert "not a folder of Bulk Data NDJSON files" in capsys.readouterr().err
    assert main(["screen", str(tmp_path), "--out", str(tmp_path / "o"), "--no-record"]) == 1
    assert "no .ndjson or .ndjson.gz files" in capsys.readouterr().err
    assert main(["screen", "--out", str(tmp_path / "o")]) == 1
    assert "either an input folder or --fhir" in capsys.readouterr().err


def test_synth_is_deterministic_and_says_it_is_synthetic(tmp_path, capsys):
    from cds.cli import main

    assert main(["synth", "--patients", "25", "--out", str(tmp_path / "a")]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert main(["synth", "--patients", "25", "--out", str(tmp_path / "b")]) == 0
    for path in (tmp_path / "a").glob("*.ndjson"):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()
    patients = [json.loads(l) for l in (tmp_path / "a" / "Patient.ndjson").read_text().splitlines()]
    assert all(p["meta"]["tag"][0]["code"] == "synthetic" for p in patients)
    shapes = (tmp_path / "a" / "Observation.ndjson").read_text()
    assert "84413-4" in shapes and "genotype" in shapes and "phenotype" in shapes
    assert (tmp_path / "a" / "DiagnosticReport.ndjson").stat().st_size > 0


def test_patient_ids_json_escapes_are_grouped_like_any_other(small_cohort, tmp_path):
    # Phase one writes each line after its patient's id, JSON-quoted; phase two groups by it. An id
    # that JSON must escape (quote, backslash, tab) or that is not ASCII must still be one patient.
    plain = run(small_cohort, tmp_path / "plain", workers=1, raw_ids=True)
    original = sorted(resources_by_patient(small_cohort))[3]
    odd = 'odd"\\\tid-é'
    folder = tmp_path / "in"
    folder.mkdir()
    for path in small_cohort.glob("*.ndjson"):
        with open(path, encoding="utf-8") as f, open(folder / path.name, "w", encoding="utf-8") as out:
            for line in f:
                r = json.loads(line)
                if r["resourceType"] == "Patient" and r["id"] == original:
                    r["id"] = odd
                for field in ("subject", "patient"):
                    if isinstance(r.get(field), dict) and r[field].get("reference") == f"Patient/{original}":
                        r[field]["reference"] = f"Patient/{odd}"
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
    for path in small_cohort.glob("*.txt"):         # listed as not read, in both runs
        (folder / path.name).write_text(path.read_text())
    renamed = run(folder, tmp_path / "renamed", workers=2, raw_ids=True)
    assert renamed.summary["counts"] == plain.summary["counts"]

    def rows_of(out, pid):
        found = {}
        for name in ("actionable.csv", "testing.csv", "carriers.csv", "no_card.csv"):
            with open(out / name, newline="", encoding="utf-8") as f:
                found[name] = sorted(tuple(v for k, v in r.items() if k != "patient")
                                     for r in csv.DictReader(f) if r["patient"] == pid)
        return found

    before = rows_of(tmp_path / "plain", original)
    assert any(before.values())
    assert rows_of(tmp_path / "renamed", odd) == before


def test_a_start_up_that_fails_while_phase_one_runs_stops_its_workers(small_cohort, tmp_path):
    import multiprocessing

    from cds.errors import CdsError

    empty = tmp_path / "no-knowledge"
    empty.mkdir()
    with pytest.raises(CdsError, match="no guidelines/ folder"):
        run(small_cohort, tmp_path / "out", workers=2, knowledge_dir=empty)
    assert multiprocessing.active_children() == []
    assert list((tmp_path / "out").iterdir()) == []        # the scratch partitions are gone too
