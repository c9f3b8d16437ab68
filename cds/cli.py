"""The `cds` command: validate and explain the knowledge, import CPIC, serve, test rules, report.

User errors (CdsError) print as a sentence on stderr with exit status 1 (2 for usage errors);
tracebacks are for bugs only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from cds.errors import CdsError, KnowledgeError


def _cmd_validate(args: argparse.Namespace) -> int:
    from cds.knowledge.reachability import unreachable_notes

    kb = _knowledge(args, args.path, use_cache=False)  # the files themselves
    recs = sum(len(g.recommendations) for g in kb.guidelines.values())
    print(f"OK: {len(kb.genes)} gene tables, {len(kb.guidelines)} guidelines ({recs} recommendations), "
          f"{len(kb.rules)} rules, {len(kb.services)} services; knowledge version {kb.version}")
    for notice in kb.notices:  # valid, but worth a reviewer's eye (e.g. a guideline cited by URL only)
        print(notice)
    notes = unreachable_notes(kb)
    if notes:  # not faults: the source says something our gene tables cannot produce, kept with the reason
        print(f"{len(notes)} source recommendation(s) our gene tables cannot reach (no card can rest on them):")
        for note in notes:
            print(f"  {note}")
    for g in sorted(kb.guidelines.values(), key=lambda g: g.id):
        for i, drug in enumerate(g.drugs):
            if drug.no_rxnorm:
                said = f"drug {drug.name} has no RxNorm code, matched by name: {drug.no_rxnorm}"
                print(f"  {kb.diag(g, said, 'drugs', i)}")
    return 0


def _knowledge(args: argparse.Namespace, path: str | None, *, use_cache: bool = True):
    """The knowledge at `path`, else where the settings say (CDS_KNOWLEDGE_DIR, else the bundled)."""
    from cds.knowledge.loader import load_knowledge

    settings = args.settings
    return load_knowledge(Path(path) if path else settings.knowledge_dir, use_cache=use_cache,
                          cache_dir=settings.knowledge_cache_dir())


def _load_engine(args: argparse.Namespace, path: str | None):
    from cds.engine import Engine

    return Engine.from_knowledge(_knowledge(args, path))


def _cmd_explain(args: argparse.Namespace) -> int:
    from cds.explain import drugs_with_advice, explain, pharmcat_text, to_json, to_text

    if not args.drug and not args.pharmcat:
        raise CdsError("give at least one --drug")
    from cds.explain import StatedClinical, dose_json, dose_text, doses
    from cds.sources import parse_source_option

    sources = parse_source_option(args.source) if args.source else None
    engine = _load_engine(args, args.knowledge)
    reading = _read_pharmcat(engine, args.pharmcat) if args.pharmcat else None
    statements = reading.interpretations if reading else None
    drugs = args.drug or drugs_with_advice(engine, statements or {})
    evaluation = explain(engine, args.genotype or [], drugs, args.population, sources, statements)
    if args.patient_summary:
        _write_patient_summary(engine, args, reading, sources)
    if args.fhir:
        from cds.fhir.interpretation import interpretation_resources

        resources = interpretation_resources(engine.kb, evaluation, scope=args.patient or "explain",
                                             patient_ref=f"Patient/{args.patient}" if args.patient else None,
                                             as_bundle=True)
        print(json.dumps(resources.bundle(), indent=2, ensure_ascii=False))
        return 0
    stated = StatedClinical(args.age, args.height, args.weight, args.race, args.medication)
    dose_decisions = doses(engine, evaluation, stated)
    if args.json:
        out = to_json(evaluation)
        if dose_decisions:
            out["doses"] = [dose_json(d) for d in dose_decisions]
        if reading:
            from cds.pharmcat.present import results_json
            out["pharmcat"] = results_json(reading.results, reading.notes)
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        if reading:
            from cds.pharmcat.present import calls_json
            print(pharmcat_text(calls_json(reading.results), reading.results.method, reading.notes) + "\n")
        print("\n".join([to_text(evaluation), *[line for d in dose_decisions for line in dose_text(d)]]))
    return 0


def _write_patient_summary(engine, args: argparse.Namespace, reading, sources) -> None:
    """The patient's own summary as a PDF, over every drug of the knowledge base (not only --drug)."""
    from cds.cards import CardRenderer
    from cds.explain import explain
    from cds.patient_summary.model import build_patient_summary, reported_from_evaluation
    from cds.patient_summary.pdf import summary_pdf

    statements = reading.interpretations if reading else None
    everything = explain(engine, args.genotype or [], sorted(engine.compiled.drugs), args.population, sources,
                         statements)
    tested = args.tested or (reading.results.timestamp[:10] if reading and reading.results.timestamp else None)
    not_interpreted = [(c.gene, c.diplotype or "", "no gene table in this knowledge base") for c in
                       (reading.results.calls if reading else ()) if c.gene not in everything.interpretations
                       and c.gene not in reading.no_result and c.gene not in everything.conflicts]
    rows = reported_from_evaluation(everything, date=tested, lab=args.lab,
                                    no_result=reading.no_result if reading else (), not_interpreted=not_interpreted)
    summary = build_patient_summary(engine.kb, CardRenderer(engine.kb, engine), everything, rows)
    try:
        Path(args.patient_summary).write_bytes(summary_pdf(summary, args.settings.pdf_font))
    except OSError as err:
        raise CdsError(f"cannot write {args.patient_summary}: {err.strerror}") from None
    print(f"patient summary written to {args.patient_summary}", file=sys.stderr)


def _read_pharmcat(engine, path: str):
    from cds.pharmcat.interpret import interpret_calls
    from cds.pharmcat.read import read_pharmcat

    return interpret_calls(engine.kb.interpreters, read_pharmcat(path))


def _cmd_convert_pharmcat(args: argparse.Namespace) -> int:
    from cds.ndjson_out import write_ndjson
    from cds.pharmcat.fhir import pharmcat_resources
    from cds.pharmcat.read import read_pharmcat

    if not args.patient.strip() or "/" in args.patient:
        raise CdsError("--patient is the Patient's id on the FHIR server (e.g. 123), not a reference")
    conversion = pharmcat_resources(read_pharmcat(args.file), args.patient.strip(), lab=args.lab)
    count = write_ndjson(Path(args.out), conversion.resources)
    print(f"wrote {count} Observation(s) for Patient/{args.patient.strip()} to {args.out}")
    for line in conversion.not_written:
        print(f"  not written: {line}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from cds.knowledge.importer import default_errata, import_cpic

    errata = Path(args.errata) if args.errata else default_errata(args.settings.knowledge_dir)
    report = import_cpic(Path(args.path), Path(args.out), errata)
    print(report.summary())
    return 0


def _cmd_import_dpwg(args: argparse.Namespace) -> int:
    from cds.knowledge.dpwg_importer import import_dpwg

    report = import_dpwg(Path(args.path), Path(args.out), Path(args.genes) if args.genes else None)
    print(report.summary())
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    from cds.cards import CardRenderer
    from cds.ruletests import format_report, run_rule_tests

    engine = _load_engine(args, args.path)
    report = run_rule_tests(engine, CardRenderer(engine.kb, engine), args.rule or None, args.as_of)
    print(format_report(report))
    return 1 if report.failed or report.rules_without_tests else 0


def _iso_date(value: str):
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from cds.service.server import serve

    serve(args.host, args.port, args.workers)
    return 0


def _cmd_version(args: argparse.Namespace) -> int:
    from cds import __version__

    kb = _knowledge(args, args.knowledge)
    print(f"pgx-cds {__version__}")
    print(f"knowledge base version {kb.version} ({kb.root})")
    from cds.sources import site_default

    print(f"guideline sources the policy selects by default: {', '.join(site_default(kb))}")
    for source in ("CPIC", "DPWG"):
        guidelines = sorted((g for g in kb.guidelines.values() if g.source == source), key=lambda g: g.id)
        if guidelines:
            print(f"{source} guidelines ({len(guidelines)}):")
        for g in guidelines:
            print(f"  {g.id}: {g.version}")
    for gene in sorted(kb.genes.values(), key=lambda t: t.gene):
        print(f"  gene {gene.gene}: " + "; ".join(f"{s.name} {s.version}" for s in gene.sources))
    return 0


def _cmd_screen(args: argparse.Namespace) -> int:
    from cds.screen.cli import run_screen

    return run_screen(args)


def _cmd_synth(args: argparse.Namespace) -> int:
    from cds.screen.synth import write_cohort

    if args.patients < 1:
        raise CdsError("--patients must be at least 1")
    counts = write_cohort(_knowledge(args, args.knowledge), args.patients,
                          Path(args.out), args.seed, args.gzip)
    print(f"SYNTHETIC cohort (not clinical data) of {args.patients} patients in {args.out}: "
          + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cds import __version__

    parser = argparse.ArgumentParser(prog="cds", description="Pharmacogenomic CDS Hooks service and knowledge tools")
    parser.add_argument("--version", action="version", version=f"pgx-cds {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the CDS Hooks service under gunicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, help="worker processes (default $CDS_WORKERS or 2)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("validate", help="check every knowledge file and their cross-links")
    p.add_argument("path", nargs="?", help="knowledge root (the folder holding guidelines/, rules/, hooks/)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("explain", help="phenotypes and matching recommendations for genotypes and drugs")
    p.add_argument("--genotype", action="append", metavar="GENE=VALUE",
                   help="a diplotype (CYP2C19='*2/*17'), phenotype ('Poor Metabolizer'), activity score "
                        "(CYP2D6=score:1.0) or HLA status (HLA-B='*57:01 positive'); repeatable")
    p.add_argument("--pharmcat", metavar="FILE",
                   help="PharmCAT's calls: a *.phenotype.json, *.report.json or outside-call TSV, read as PharmCAT "
                        "called each gene (without --drug: every drug the called genes affect)")
    p.add_argument("--drug", action="append", help="drug ingredient name or RxNorm code; repeatable")
    p.add_argument("--population", help="guideline population, e.g. 'CVI ACS PCI' (default: all)")
    p.add_argument("--source",
                   help="guideline source: cpic, dpwg or all (default: the sources the rules policy selects)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--fhir", action="store_true",
                   help="print the interpretation as a FHIR R4 Bundle of HL7 Genomics Reporting (STU3) resources")
    p.add_argument("--patient", metavar="ID", help="with --fhir: the resources' subject, Patient/ID")
    p.add_argument("--patient-summary", metavar="FILE.pdf",
                   help="also write the patient's own summary (results in plain words, the drugs they affect, a "
                        "wallet card with a QR code of the results) as a PDF")
    p.add_argument("--lab", help="with --patient-summary: the laboratory that tested the patient")
    p.add_argument("--tested", metavar="DATE", help="with --patient-summary: the date of the results "
                                                    "(default: when PharmCAT wrote --pharmcat's file)")
    p.add_argument("--knowledge", help="knowledge root (default: the bundled knowledge)")
    p.add_argument("--age", type=int, help="age in years, for a drug with a dosing algorithm (warfarin)")
    p.add_argument("--height", type=float, help="body height in cm")
    p.add_argument("--weight", type=float, help="body weight in kg")
    p.add_argument("--race", choices=("white", "asian", "black", "missing_or_mixed"),
                   help="IWPC race group (default: missing_or_mixed)")
    p.add_argument("--medication", action="append",
                   help="an active medication by name (amiodarone, carbamazepine, ...); repeatable; 'none' for none")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("test", help="run the test cases written next to each rule, and report coverage")
    p.add_argument("path", nargs="?", help="knowledge root (default: the bundled knowledge)")
    p.add_argument("--rule", action="append", help="only this rule id; repeatable")
    p.add_argument("--as-of", type=_iso_date, metavar="DATE",
                   help="run the cases as on this day (YYYY-MM-DD): the rules in force then (effective_from/until)")
    p.set_defaults(func=_cmd_test)

    p = sub.add_parser("version", help="the knowledge base version and the source version of every guideline")
    p.add_argument("--knowledge", help="knowledge root (default: the bundled knowledge)")
    p.set_defaults(func=_cmd_version)

    from cds.screen.cli import register as register_screen_command
    register_screen_command(sub, _cmd_screen)

    p = sub.add_parser("synth", help="write a deterministic SYNTHETIC cohort (not clinical data) as Bulk Data NDJSON")
    p.add_argument("--patients", type=int, required=True)
    p.add_argument("--out", required=True, help="folder for the NDJSON files")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--gzip", action="store_true", help="write .ndjson.gz")
    p.add_argument("--knowledge", help="knowledge root (default: the bundled knowledge)")
    p.set_defaults(func=_cmd_synth)

    from cds.store.cli import register as register_store_commands
    register_store_commands(sub)
    from cds.policy.cli import register as register_policy_commands
    register_policy_commands(sub)

    p = sub.add_parser("convert", help="write a laboratory's results as FHIR (HL7 Genomics Reporting STU3) NDJSON")
    csub = p.add_subparsers(dest="source", required=True)
    c = csub.add_parser("pharmcat", help="PharmCAT's *.phenotype.json, *.report.json or outside-call TSV → "
                                         "genotype Observations, as PharmCAT called each gene")
    c.add_argument("file")
    c.add_argument("--patient", required=True, metavar="ID",
                   help="the Patient's id on the FHIR server (subject Patient/ID)")
    c.add_argument("--out", required=True, metavar="FILE.ndjson", help="where to write the Observations, one per line")
    c.add_argument("--lab", help="the performing laboratory's name (Observation.performer)")
    c.set_defaults(func=_cmd_convert_pharmcat)

    p = sub.add_parser("import", help="generate guidelines/ YAML from an external source")
    isub = p.add_subparsers(dest="source", required=True)
    c = isub.add_parser("cpic", help="from a CPIC export (genes/, guidelines/, optional v<release>/ tables)")
    c.add_argument("path")
    c.add_argument("--out", default="guidelines", help="output folder (default: guidelines)")
    c.add_argument("--errata",
                   help="where the source is wrong: a TSV of corrections (default: guidelines/errata/cpic.tsv)")
    c.set_defaults(func=_cmd_import)
    d = isub.add_parser("dpwg",
                        help="from PharmGKB's DPWG export (PATH/dpwg/DPWG_*.json), mapped onto guidelines/genes")
    d.add_argument("path")
    d.add_argument("--out", default="guidelines", help="output folder; writes OUT/dpwg/ (default: guidelines)")
    d.add_argument("--genes", help="gene tables to map DPWG's keys onto (default: OUT/genes)")
    d.set_defaults(func=_cmd_import_dpwg)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from cds.settings import CoreSettings

        # the environment, read once here and handed to the command (cds serve's app reads its own)
        args.settings = CoreSettings.from_env()
        if getattr(args, "database_url", "") is None:
            args.database_url = args.settings.database_url
        return args.func(args)
    except KnowledgeError as err:
        print(f"{len(err.diagnostics)} problem(s) in the knowledge base:", file=sys.stderr)
        for d in err.diagnostics:
            print(f"  {d}", file=sys.stderr)
        return 1
    except CdsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `cds version | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0


# Commands whose process ends holding a large heap (a screening run's knowledge, compiled engine and
# inherited pages; a synthetic cohort): once their output is written and flushed, freeing every
# object one by one only delays the exit (measured: 0.3 s of a 3 s screening run). Their pools and
# clusters are shut down, and their files closed, before the command returns.
_QUICK_EXIT = frozenset({"screen", "synth"})


def run() -> None:
    """The `cds` console script."""
    status = main()
    if sys.argv[1:2] and sys.argv[1] in _QUICK_EXIT:
        import logging
        import os

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):   # closed, or a reader that left (`| head`)
                stream.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
