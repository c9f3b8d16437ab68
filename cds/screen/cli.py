"""`cds screen`: the command-line face of population screening (argument parsing and messages)."""
from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from cds.errors import CdsError

TOKEN_ENV = "CDS_BULK_TOKEN"
# SMART Backend Services: option → environment variable read when the option is not given
BACKEND_ENV = {"client_id": "CDS_BULK_CLIENT_ID", "private_key": "CDS_BULK_PRIVATE_KEY",
               "key_id": "CDS_BULK_KEY_ID", "scope": "CDS_BULK_SCOPE", "token_endpoint": "CDS_BULK_TOKEN_ENDPOINT"}
PASSPHRASE_ENV = "CDS_BULK_PRIVATE_KEY_PASSPHRASE"     # environment only: a secret does not go on a command line


def register(subparsers, func) -> None:
    p = subparsers.add_parser(
        "screen", help="population screening over FHIR Bulk Data NDJSON (a folder, or a server's $export)",
        description="Decide every patient of a FHIR Bulk Data export as the CDS Hooks service would at order "
                    "signing (one order-sign per active drug) and write actionable.csv, carriers.csv, testing.csv, "
                    "unreadable.csv, withheld.csv, summary.json and report.html to OUT.")
    p.add_argument("input", nargs="?", help="folder of .ndjson / .ndjson.gz files, subfolders included, or its "
                   "fsspec URL (s3://bucket/export; gs://, abfs://) (or use --fhir)")
    p.add_argument("--fhir", metavar="URL", help="run a Bulk Data $export against this FHIR base (or kick-off) URL")
    p.add_argument("--token", help=f"bearer token for --fhir (default: ${TOKEN_ENV})")
    smart = p.add_argument_group("SMART Backend Services (for --fhir, instead of --token)")
    smart.add_argument("--client-id", help=f"this client's id at the EHR (default: ${BACKEND_ENV['client_id']})")
    smart.add_argument("--private-key", metavar="PEM",
                       help="file with the client's private key, RSA (RS384) or EC P-384 "
                       f"(ES384) (default: ${BACKEND_ENV['private_key']}; an encrypted key's passphrase in "
                       f"${PASSPHRASE_ENV})")
    smart.add_argument("--key-id", metavar="KID", help="the key's kid in the JWK Set registered at the EHR "
                       f"(default: ${BACKEND_ENV['key_id']})")
    smart.add_argument("--scope", help="scopes to ask for (default: "
                       f"${BACKEND_ENV['scope']}, else system/<type>.rs for each exported type)")
    smart.add_argument("--token-endpoint", metavar="URL",
                       help="skip discovery from [base]/.well-known/smart-configuration "
                       f"(default: ${BACKEND_ENV['token_endpoint']})")
    p.add_argument("--export-wait", type=float, default=3600.0, metavar="S",
                   help="give up on an export not complete after S seconds (default 3600)")
    p.add_argument("--out", required=True, help="output folder, or its fsspec URL (s3://bucket/screened)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: the core count)")
    p.add_argument("--engine", choices=("embedded", "dask"), default="embedded",
                   help="embedded: local worker processes (default); dask: a dask.distributed cluster")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --engine dask: the scheduler of an existing cluster (tcp://host:8786); "
                        "default: a LocalCluster of --workers processes")
    p.add_argument("--work-dir", help="scratch folder or URL for the partitions (default: inside OUT; a local "
                                      "temporary folder when OUT is a URL and the workers are local); on a dask "
                                      "cluster it must be on storage every worker sees at the same path")
    p.add_argument("--max-line-bytes", type=byte_size, default=None, metavar="SIZE",
                   help="skip (and list in unreadable.csv) any NDJSON line longer than this (default 8MiB)")
    p.add_argument("--max-patient-bytes", type=byte_size, default=None, metavar="SIZE",
                   help="do not screen (and list) a patient whose resources add up to more than this "
                        "(default 32MiB); it also bounds the Medication resources every worker holds")
    p.add_argument("--raw-ids", action="store_true", help="write raw patient ids instead of the audit pseudonyms")
    p.add_argument("--fhir-out", metavar="DIR", help="also write each patient's interpretation as HL7 Genomics "
                   "Reporting resources, FHIR Bulk Data NDJSON (Observation, Task, DiagnosticReport) an EHR can "
                   "import; patients as pseudonyms unless --raw-ids")
    p.add_argument("--require-consent", action="store_true", default=None,
                   help="use genomic data only under an active permitting Consent (default: $CDS_REQUIRE_CONSENT)")
    p.add_argument("--knowledge", help="knowledge root (default: $CDS_KNOWLEDGE_DIR or the bundled knowledge)")
    p.add_argument("--database-url", metavar="URL", help="audit database for the run's record (default: $DATABASE_URL)")
    p.add_argument("--no-record", action="store_true", help="do not record the run in the audit database")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")
    p.set_defaults(func=func)


_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)


def byte_size(text: str) -> int:
    """A size in bytes, or with a binary unit: 8388608, 8MiB, 8M, 512k, 1GiB."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or a number with k, M, G, KiB, MiB or GiB)")
    return int(match[1]) << {"": 0, "k": 10, "m": 20, "g": 30}[match[2].lower()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _credentials(args: argparse.Namespace, backend: dict[str, str | None], types: tuple[str, ...]):
    """A bearer token (--token, $CDS_BULK_TOKEN), or SMART Backend Services when a client id is given."""
    from cds.screen.smart_backend import BackendServicesToken, StaticToken, load_client_key

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not backend["client_id"]:
        # Options given without a client id are a mistake; variables set for the site are one only
        # when nothing else authorises the export.
        others = [f"--{name.replace('_', '-')}" for name in BACKEND_ENV if getattr(args, name)]
        if not token:
            others += [f"${env}" for name, env in BACKEND_ENV.items() if not getattr(args, name) and backend[name]]
        if others:
            raise CdsError(f"{', '.join(others)} without --client-id (or ${BACKEND_ENV['client_id']}): "
                           "SMART Backend Services needs the client id")
        return StaticToken(token) if token else None
    if token:
        raise CdsError(f"give either a bearer token (--token, ${TOKEN_ENV}) or SMART Backend Services "
                       f"(--client-id, ${BACKEND_ENV['client_id']}), not both")
    if not backend["private_key"]:
        raise CdsError(f"SMART Backend Services needs --private-key (or ${BACKEND_ENV['private_key']}): "
                       "the PEM file of the client's private key")
    key = load_client_key(backend["private_key"], backend["key_id"] or "", os.environ.get(PASSPHRASE_ENV) or None)
    return BackendServicesToken(args.fhir, backend["client_id"], key, scope=backend["scope"],
                                token_endpoint=backend["token_endpoint"], resource_types=types)


def run_screen(args: argparse.Namespace) -> int:
    from cds.screen import storage
    from cds.screen.run import ScreeningIncomplete, ScreenOptions, screen

    if bool(args.input) == bool(args.fhir):
        raise CdsError("give either an input folder or --fhir URL")
    out = storage.resolve(args.out)
    if args.fhir and storage.is_url(out):
        raise CdsError("--fhir downloads the export into OUT/export, a local folder: give a local --out")
    settings = args.settings                  # the core's settings, read once by the command line
    knowledge = args.knowledge or settings.knowledge_dir
    require_consent = args.require_consent if args.require_consent is not None else _env_flag("CDS_REQUIRE_CONSENT")
    limits = {name: getattr(args, name) for name in ("max_line_bytes", "max_patient_bytes") if getattr(args, name)}
    options = ScreenOptions(input_dir=args.input or storage.join(out, "export"), out=out,
                            workers=args.workers, engine=args.engine, scheduler=args.scheduler,
                            raw_ids=args.raw_ids, require_consent=require_consent,
                            knowledge_dir=Path(knowledge) if knowledge else None,
                            knowledge_cache=settings.knowledge_cache_dir(), audit_key=settings.audit_key,
                            audit_key_file=settings.audit_key_file,
                            work_dir=args.work_dir, progress=args.progress, fhir_out=args.fhir_out,
                            governed=not args.no_record and settings.policy == "database",
                            governing_database=args.database_url or settings.database_url, **limits)
    backend = {name: getattr(args, name) or os.environ.get(env) or None for name, env in BACKEND_ENV.items()}
    if args.fhir:
        from cds.screen.bulk import DEFAULT_TYPES, BulkExportClient

        credentials = _credentials(args, backend, DEFAULT_TYPES)
        client = BulkExportClient(args.fhir, credentials=credentials, types=DEFAULT_TYPES, max_wait=args.export_wait)
        print(f"exporting from {client.url} …", file=sys.stderr)
        exported = client.run(Path(options.input_dir))
        if not exported.files:
            raise CdsError(f"the Bulk Data export from {client.url} produced no files")
        options.source = args.fhir
        options.export_errors = exported.errors
        tokens = getattr(credentials, "requests", 0)
        print(f"downloaded {len(exported.files)} file(s) after {exported.polls} status request(s)"
              + (f"; {len(exported.errors)} export error(s)" if exported.errors else "")
              + (f"; {tokens} access token(s) from {credentials.token_endpoint}" if tokens else ""), file=sys.stderr)
    elif any(getattr(args, name) for name in BACKEND_ENV) or args.token:
        raise CdsError("--token and the SMART Backend Services options are for --fhir")
    incomplete = None
    try:
        result = screen(options)
    except ScreeningIncomplete as err:
        result, incomplete = err.result, err
    s = result.summary
    c = s["counts"]
    print(f"screened {c['patients']} patients in {s['timings']['total_s']:.1f} s "
          f"({s['timings']['patients_per_s']}/s, {s['engine']} × {s['workers']}): "
          f"{c['patients_actionable']} on a drug their results say to change ({c['rows_actionable']} rows), "
          f"{c['patients_carriers']} carriers, {c['rows_testing']} pre-test, {c['rows_unreadable']} unreadable, "
          f"{c['patients_consent_withheld']} withheld by consent"
          + (f", {c['patients_over_limit']} over the size limit" if c["patients_over_limit"] else "") + f" → {out}/")
    if args.fhir_out:
        print(f"interpretations as FHIR Bulk Data NDJSON → {args.fhir_out}/")
    if not args.no_record:
        from cds.store.screening import record_screening_run

        run_id = record_screening_run(s, args.database_url, datetime.now(UTC))
        print(f"recorded as screening run {run_id}", file=sys.stderr)
    if incomplete:
        raise incomplete
    return 0
