"""Where one order-select call spends its time, in-process (issue 12 item 15): the request of
bench/load_service.py (3 genotype Observations, 2 draft orders) through

- the whole Flask app (test client, authentication off, audit on with SQLite, or off), against
  GET /cds-services (the trivial endpoint) in the same process, interleaved;
- the decision core alone (`cds.decision.decide` on the parsed request), and its stages.

Prints per-call medians (CPU µs, all threads of the process) and, with --profile, the top functions by cumulative time (cProfile).

    python bench/profile_order_select.py [--calls 2000] [--audit] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "http"))

from load_service import order_select_body  # noqa: E402


def timed(fn, calls: int) -> float:
    """Median CPU µs per call (this process, all its threads: the audit writer too) over `calls` calls,
    in batches of 50. CPU time, not wall time: other processes share this machine's 2 cores."""
    batches = []
    for _ in range(max(1, calls // 50)):
        t0 = time.process_time()
        for _ in range(50):
            fn()
        batches.append((time.process_time() - t0) / 50 * 1e6)
    return statistics.median(batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--audit", action="store_true", help="audit on (SQLite in a temporary directory)")
    parser.add_argument("--profile", action="store_true", help="cProfile the Flask order-select path")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pgx-profile-"))
    os.environ.update({"CDS_AUTH": "off", "CDS_AUDIT": "true" if args.audit else "false",
                       "DATABASE_URL": f"sqlite:///{work / 'audit.sqlite3'}", "CDS_SPOOL_DIR": str(work / "spool"),
                       "CDS_AUDIT_KEY": "x" * 32, "CDS_LOG_LEVEL": "WARNING",
                       "PROMETHEUS_MULTIPROC_DIR": str(work)})
    os.environ.setdefault("CDS_LOCAL_STATE", str(work / "local.sqlite3"))
    from cds.cdshooks import case_from_hook, parse_hook_request
    from cds.decision import decide
    from cds.pipeline import patient_facts
    from cds.service.app import create_app

    app = create_app()
    client = app.test_client()
    runtime = app.extensions["pgx-cds"]
    body = json.dumps(order_select_body()).encode()
    headers = {"Content-Type": "application/json"}
    answer = client.post("/cds-services/pgx-order-select", data=body, headers=headers).get_json()
    assert len(answer["cards"]) == 2, answer

    def trivial():
        client.get("/cds-services")

    def hook():
        client.post("/cds-services/pgx-order-select", data=body, headers=headers)

    service = runtime.services["pgx-order-select"]
    parsed = json.loads(body)
    hook_request = parse_hook_request(parsed, service)
    gathered = runtime.fetcher.gather(hook_request)
    case = case_from_hook(hook_request, gathered)
    advisor = runtime.advisor
    facts = patient_facts(advisor.engine, case.genomics)
    orders = advisor.resolver.read_orders(case.medications)
    drugs, refs, _ = advisor.drugs_of(orders)
    evaluation = advisor.engine.evaluate(facts.interpretations, drugs, conflicts=facts.conflicts)

    stages = {
        "Flask GET /cds-services (trivial)": trivial,
        "Flask POST order-select": hook,
        "  json.loads of the body": lambda: json.loads(body),
        "  parse_hook_request + gather + case": lambda: case_from_hook(
            parse_hook_request(json.loads(body), service), runtime.fetcher.gather(parse_hook_request(json.loads(body), service))),
        "  decide (whole core)": lambda: decide(advisor, case),
        "    patient_facts (read 3 Observations)": lambda: patient_facts(advisor.engine, case.genomics),
        "    read_orders + drugs_of": lambda: advisor.drugs_of(advisor.resolver.read_orders(case.medications)),
        "    engine.evaluate (2 drugs)": lambda: advisor.engine.evaluate(facts.interpretations, drugs,
                                                                          conflicts=facts.conflicts),
        "    order_cards": lambda: advisor.renderer.order_cards(evaluation, "order-select", refs, case.patient_ref),
    }
    for name, fn in stages.items():
        fn()  # warm
    results = {name: [] for name in stages}
    for _ in range(3):  # interleaved rounds: CPU speed drifts on this machine
        for name, fn in stages.items():
            results[name].append(timed(fn, args.calls // 3))
    print(f"audit {'on (SQLite)' if args.audit else 'off'}; median CPU µs per call over 3 interleaved rounds:")
    for name, values in results.items():
        print(f"{name:44} {statistics.median(values):8.0f}")
    ratio = statistics.median(results["Flask GET /cds-services (trivial)"]) / statistics.median(results["Flask POST order-select"])
    print(f"in-process throughput ratio order-select / trivial: {ratio:.2f}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.calls):
            hook()
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
