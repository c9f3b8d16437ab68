"""Benchmark the rules engine (issue 2).

Reports, in one process:
- start-up: load + validate + cross-link the YAML, compile, register and warm the durable-rules rulesets;
- per-evaluation time (median, p99) for a 3-gene patient ordering 2 drugs;
- the same with the knowledge base replicated 10x (synthetic extra drugs), as a ratio to the baseline.
The two engines are measured interleaved, so machine noise affects both alike.

    python bench/bench_engine.py [--rounds 5000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cds.compiler import compile_knowledge  # noqa: E402
from cds.engine import Engine  # noqa: E402
from cds.explain import parse_genotype_args  # noqa: E402
from cds.knowledge.loader import load_knowledge  # noqa: E402

PATIENT = ["CYP2C19=*2/*17", "CYP2D6=*1/*4", "SLCO1B1=*5/*5"]
DRUGS = ["clopidogrel", "amitriptyline"]


def replicate(kb, copies: int):
    """A knowledge base with every guideline repeated `copies` times under synthetic drug names."""
    guidelines = dict(kb.guidelines)
    for n in range(1, copies):
        for g in kb.guidelines.values():
            rename = {d.name: f"{d.name}-synthetic-{n}" for d in g.drugs}
            drugs = [replace_model(d, name=rename[d.name], rxnorm=f"{9_000_000 + n * 10_000 + i}")
                     for i, d in enumerate(g.drugs)]
            recs = [replace_model(r, id=f"{r.id}-synthetic-{n}", drug=rename[r.drug]) for r in g.recommendations]
            guidelines[f"{g.id}-synthetic-{n}"] = replace_model(g, id=f"{g.id}-synthetic-{n}", drugs=drugs,
                                                               recommendations=recs)
    return replace(kb, guidelines=guidelines)


def replace_model(model, **changes):
    return model.model_copy(update=changes)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    kb = load_knowledge()
    t1 = time.perf_counter()
    engine = Engine(compile_knowledge(kb))
    t2 = time.perf_counter()
    big_kb = replicate(kb, 10)
    t3 = time.perf_counter()
    big = Engine(compile_knowledge(big_kb))
    t4 = time.perf_counter()
    rules = sum(len(p.matches) + len(p.pretests) for p in engine.compiled.drugs.values())
    big_rules = sum(len(p.matches) + len(p.pretests) for p in big.compiled.drugs.values())
    print(f"start-up: load+validate YAML {1000 * (t1 - t0):.0f} ms, compile+register+warm {1000 * (t2 - t1):.0f} ms "
          f"({len(engine.compiled.drugs)} drugs, {rules} compiled rules)")
    print(f"10x knowledge: compile+register+warm {1000 * (t4 - t3):.0f} ms "
          f"({len(big.compiled.drugs)} drugs, {big_rules} compiled rules)")

    patient = parse_genotype_args(engine, PATIENT)
    for e in (engine, big):  # warm caches
        for _ in range(200):
            e.evaluate(patient, DRUGS)
    base, scaled = [], []
    for _ in range(args.rounds):
        s = time.perf_counter(); engine.evaluate(patient, DRUGS); base.append(time.perf_counter() - s)
        s = time.perf_counter(); big.evaluate(patient, DRUGS); scaled.append(time.perf_counter() - s)
    matches = sum(len(d.matches) for d in engine.evaluate(patient, DRUGS).drugs)
    b50, b99 = statistics.median(base) * 1e6, percentile(base, 0.99) * 1e6
    s50, s99 = statistics.median(scaled) * 1e6, percentile(scaled, 0.99) * 1e6
    print(f"evaluation, 3-gene patient, 2 drugs ({matches} matching recommendations), {args.rounds} rounds:")
    print(f"  1x knowledge:  median {b50:.0f} us, p99 {b99:.0f} us")
    print(f"  10x knowledge: median {s50:.0f} us, p99 {s99:.0f} us")
    print(f"  ratio 10x/1x:  median {s50 / b50:.2f}, p99 {s99 / b99:.2f}")


if __name__ == "__main__":
    main()
