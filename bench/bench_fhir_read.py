"""How long reading genomic results from a FHIR Bundle takes, for 10, 100, 1,000 and 5,000 Observations.

    /tmp/venv/bin/python bench/bench_fhir_read.py [--repeat 7] [--shared ../shared]

The Bundles are built from the real example shapes in ../shared/fhir-examples (HL7 Genomics Reporting
IG STU3 genotypes, haplotype pairs, therapeutic implications, HLA genotypes and GL strings, and the
FHIR R4 core phenotype and TPMT diplotype), copied in blocks of 16 with varied ids and one
DiagnosticReport per block, as a lab's searchset would hold them. Reported per size (median of the
repeats): `read_genomic_results`, then `select_current`, and two baselines measured in the same run:
`json.loads` of the same Bundle (the cost of merely parsing the request body) and full fhir.resources
R4B validation of every Observation (what the reader avoids doing by default).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cds.fhir import read_genomic_results, select_current  # noqa: E402
from cds.fhir.mappings import default_mappings  # noqa: E402

STU3 = "fhir-examples/HL7_genomics-reporting/STU3-3.0.0-published"
CORE = "fhir-examples/FHIR_R4_core_spec_examples__via_fhir-ru_fhir-ru.github.io"
BLOCK = [  # 16 Observations of one report; derivedFrom links inside the block are kept. The haplotype
    # pair sits after position 10 so that no size measured (10, 100, 1,000, 5,000) splits it.
    f"{STU3}/Observation-Pgx-geno-1001.json", f"{STU3}/Observation-TxImp01.json", f"{STU3}/Observation-TxImp02.json",
    f"{STU3}/Observation-TxImp03.json", f"{STU3}/Observation-TxImp04.json", f"{STU3}/Observation-TxImp05.json",
    f"{STU3}/Observation-Pgx-geno-1002.json", f"{STU3}/Observation-Pgx-geno-1003.json",
    f"{STU3}/Observation-GenotypeExample1.json", f"{CORE}/observation-example-phenotype.json",
    f"{STU3}/Observation-GenotypeExamplePharmVar.json", f"{STU3}/Observation-HaplotypeExamplePharmVar01.json",
    f"{STU3}/Observation-HaplotypeExamplePharmVar02.json", f"{STU3}/Observation-genotype-hla-a-glstring-r4.json",
    f"{STU3}/Observation-haplotype-hla-a-1-r4.json", f"{CORE}/observation-example-TPMT-diplotype.json",
]
SIZES = (10, 100, 1000, 5000)


def build_bundle(templates: list[dict], size: int) -> dict:
    entries = []
    block = count = 0
    while count < size:
        ids = {t["id"]: f"{t['id']}-b{block}" for t in templates}
        members = []
        for t in templates:
            if count >= size:
                break
            count += 1
            obs = copy.deepcopy(t)
            obs["id"] = ids[t["id"]]
            for ref in obs.get("derivedFrom", []):
                target = ref["reference"].removeprefix("Observation/")
                if target in ids:
                    ref["reference"] = f"Observation/{ids[target]}"
            entries.append({"fullUrl": f"http://lab.example/fhir/Observation/{obs['id']}", "resource": obs})
            members.append({"reference": f"Observation/{obs['id']}"})
        report = {"resourceType": "DiagnosticReport", "id": f"pgx-report-b{block}", "status": "final",
                  "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4"}]}, "result": members}
        entries.append({"fullUrl": f"http://lab.example/fhir/DiagnosticReport/{report['id']}", "resource": report})
        block += 1
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # skipped-resource warnings are not what is measured
    templates = [json.loads((args.shared / p).read_text()) for p in BLOCK]
    default_mappings()  # start-up work, not per request
    from fhir.resources.R4B.observation import Observation

    print(f"Python {sys.version.split()[0]}, median of {args.repeat} runs; "
          f"Bundles of IG/R4-core example shapes, {len(BLOCK)} Observations + 1 DiagnosticReport per block")
    header = (f"{'Observations':>12} {'read ms':>9} {'µs/obs':>8} {'select ms':>10} {'results':>8} {'skipped':>8} "
              f"{'json.loads ms':>14} {'read/json':>10} {'R4B validate ms':>16} {'read/R4B':>9}")
    print(header)
    for size in SIZES:
        bundle = build_bundle(templates, size)
        text = json.dumps(bundle)
        observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
        assert len(observations) == size
        reading = read_genomic_results(bundle)
        read_s = timed(lambda: read_genomic_results(bundle), args.repeat)
        select_s = timed(lambda: select_current(reading.results), args.repeat)
        json_s = timed(lambda: json.loads(text), args.repeat)
        r4b_s = timed(lambda: [Observation.model_validate(o) for o in observations], max(1, min(args.repeat, 3)))
        print(f"{size:>12} {read_s * 1e3:>9.2f} {read_s / size * 1e6:>8.1f} {select_s * 1e3:>10.2f} "
              f"{len(reading.results):>8} {len(reading.skipped):>8} {json_s * 1e3:>14.2f} {read_s / json_s:>9.1f}x "
              f"{r4b_s * 1e3:>16.1f} {read_s / r4b_s:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
