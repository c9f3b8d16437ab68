"""A screening run from end to end: partition the export to disk, decide partition by partition on
local worker processes (embedded, the default) or on a dask.distributed cluster, then write the
outputs. Both engines run the same two functions (ndjson.partition_chunk, patients.screen_partition_task);
only who runs them differs.

Every location (input, output, scratch) is resolved here, before a task is shipped: a local path made
absolute, an fsspec URL as given. What a run could not read is never silent: lines and files it skipped
are rows of unreadable.csv, and a run that lost an input file, screened nobody, or whose phases did not
see the same scratch folder writes its outputs and then raises ScreeningIncomplete, naming what was lost.
"""
from __future__ import annotations

import csv
import getpass
import io
import os
import pickle
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds.errors import CdsError
from cds.screen import ndjson, storage
from cds.screen.outputs import COLUMNS

if TYPE_CHECKING:
    from cds.screen.patients import PartitionResult

ENGINES = ("embedded", "dask")
MIN_LIMIT_BYTES = 1 << 10


@dataclass
class ScreenOptions:
    input_dir: str | os.PathLike        # a folder, or an fsspec URL (s3://bucket/export)
    out: str | os.PathLike
    workers: int = os.cpu_count() or 1
    engine: str = "embedded"
    scheduler: str | None = None           # dask scheduler address; None: a LocalCluster
    raw_ids: bool = False
    require_consent: bool = False
    knowledge_dir: Path | None = None
    knowledge_cache: Path | None = None    # the knowledge cache's folder (None: none)
    work_dir: str | os.PathLike | None = None   # scratch for the partitions (default: inside a local OUT)
    fhir_out: str | os.PathLike | None = None   # also write the interpretations as FHIR Bulk Data NDJSON here
    max_line_bytes: int = ndjson.MAX_LINE_BYTES
    max_patient_bytes: int = ndjson.MAX_PATIENT_BYTES
    progress: bool | None = None           # None: a bar when stderr is a terminal
    audit_key: bytes | str | None = None
    audit_key_file: Path | None = None     # the development key's file when no audit_key is given
    source: str | None = None              # e.g. the Bulk Data server it came from
    # Decide with the policy version active in this database (the one the service serves), not the
    # rules/ files: set when the run is recorded there (cds screen without --no-record).
    governing_database: str | None = None
    governed: bool = False
    export_errors: list[tuple[str, str]] = field(default_factory=list)   # what the server could not export


@dataclass
class ScreenResult:
    summary: dict[str, Any]
    out: str
    files: dict[str, str] = field(default_factory=dict)


class ScreeningIncomplete(CdsError):
    """The run wrote its outputs, but lost input on the way (`lost` says what): it must not pass for
    a screening of the whole export."""

    def __init__(self, result: ScreenResult):
        self.result = result
        lost = result.summary["lost"]
        super().__init__(f"screening incomplete, {len(lost)} loss(es); the outputs in {result.out} lack them: "
                         + "; ".join(lost))


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()           # not even a disabled tqdm: it would start its monitor thread
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="part", leave=False, file=sys.stderr)


Gather = Callable[[Any], list]     # bar → the tasks' results, in the order of the tasks


class _EmbeddedRunner:
    """Local worker processes, forked (children inherit what the parent has built), or this process
    alone for one worker. `start` submits and returns at once, so the parent can work meanwhile."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pools: list[ProcessPoolExecutor] = []

    def start(self, fn: Callable, tasks: list[tuple], order: list[int]) -> Gather:
        if self.workers <= 1:
            def run_here(bar) -> list:
                results = [None] * len(tasks)
                for i in order:
                    results[i] = fn(*tasks[i])
                    bar.update()
                return results
            return run_here
        import multiprocessing

        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("fork"))
        self._pools.append(pool)
        futures = {pool.submit(fn, *tasks[i]): i for i in order}

        def gather(bar) -> list:
            results = [None] * len(tasks)
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
            finally:
                self._pools.remove(pool)
                pool.shutdown(cancel_futures=True)
            return results
        return gather

    def close(self) -> None:
        # A phase that never got gathered (the start-up failed meanwhile): stop its workers.
        while self._pools:
            self._pools.pop().shutdown(cancel_futures=True)


class _DaskRunner:
    """dask.distributed as the engine: a LocalCluster of `workers` processes, or the cluster whose
    scheduler is at `address`. Workers must see the input and scratch folders at the same paths:
    a shared filesystem, or object storage by URL."""

    def __init__(self, workers: int, address: str | None):
        try:
            from distributed import Client, LocalCluster
        except ImportError as err:    # the service installs without the dask extra
            raise CdsError("--engine dask needs dask.distributed, which this installation lacks: "
                           "pip install 'pgx-cds[dask]'") from err

        self.cluster = None
        if address:
            self.client = Client(address, timeout="30s")
        else:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=40)
            self.client = Client(self.cluster)

    def start(self, fn: Callable, tasks: list[tuple], order: list[int], broadcast: Any = None) -> Gather:
        from distributed import as_completed as dask_completed

        shared = self.client.scatter(broadcast, broadcast=True) if broadcast is not None else None
        futures = {}
        for i in order:
            future = self.client.submit(fn, *((shared,) if shared is not None else ()), *tasks[i], pure=False)
            futures[future.key] = (i, future)

        def gather(bar) -> list:
            results = [None] * len(tasks)
            for future in dask_completed([f for _, f in futures.values()]):
                results[futures[future.key][0]] = future.result()
                bar.update()
            return results
        return gather

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _largest_first(sizes: list[int]) -> list[int]:
    """Task indexes, largest first: the last task to finish is a small one, so no worker idles long
    at the end of a phase (results keep the tasks' order, so outputs do not depend on it)."""
    return sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))


def _check(options: ScreenOptions) -> None:
    if options.engine not in ENGINES:
        raise CdsError(f"--engine must be one of {', '.join(ENGINES)}, not {options.engine!r}")
    if options.workers < 1:
        raise CdsError("--workers must be at least 1")
    limits = (("--max-line-bytes", options.max_line_bytes), ("--max-patient-bytes", options.max_patient_bytes))
    for name, value in limits:
        if value < MIN_LIMIT_BYTES:
            raise CdsError(f"{name} must be at least {MIN_LIMIT_BYTES} bytes, not {value}")


def _scratch_parent(options: ScreenOptions, out: str) -> str:
    """Inside OUT when it is local; for an OUT in object storage, a local temporary folder unless the
    workers are another machine's (--scheduler), which must share it: then inside OUT too."""
    if options.work_dir:
        return storage.resolve(options.work_dir)
    if storage.is_url(out) and not (options.engine == "dask" and options.scheduler):
        return tempfile.gettempdir()
    return out


def screen(options: ScreenOptions) -> ScreenResult:
    from cds.store.pseudonym import load_audit_key

    _check(options)
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    input_dir, out = storage.resolve(options.input_dir), storage.resolve(options.out)
    inputs = ndjson.input_files(input_dir)
    files = inputs.files
    audit_key = load_audit_key(options.audit_key, options.audit_key_file)
    progress = sys.stderr.isatty() if options.progress is None else options.progress
    storage.makedirs(out)
    work = storage.scratch(_scratch_parent(options, out))
    timings: dict[str, float] = {}
    runner: _DaskRunner | _EmbeddedRunner = (_DaskRunner(options.workers, options.scheduler)
                                             if options.engine == "dask" else _EmbeddedRunner(options.workers))
    try:
        partitions = ndjson.partition_count(files, 4)   # not of --workers: outputs never depend on it
        chunk_list = ndjson.chunks(files)
        t = time.perf_counter()
        # Phase one runs on the workers while this process hashes the input, loads the knowledge and
        # (embedded) compiles the engine the phase-two workers inherit: on a few cores, the start-up
        # overlaps the reading instead of preceding it. (One worker: all of it here, in turn.)
        tasks = [(c, i, work, partitions, options.max_line_bytes) for i, c in enumerate(chunk_list)]
        reading = runner.start(ndjson.partition_chunk, tasks,
                               _largest_first([ndjson.chunk_size(c) for c in chunk_list]))
        k = time.perf_counter()
        # The decision code is imported only now (a quarter of a second): phase one's workers were
        # forked without it and are already reading.
        from cds.knowledge.loader import load_knowledge
        from cds.screen.patients import Settings, screen_partition_task, worker_screener

        digest = ndjson.input_digest(files)
        kb = load_knowledge(options.knowledge_dir, cache_dir=options.knowledge_cache)
        policy_version = None
        if options.governed:
            from cds.policy.active import governed

            kb, policy_version = governed(kb, options.governing_database)
        # dask workers build their own Screener from the pickled knowledge; embedded ones inherit the parent's.
        settings = Settings(pickle.dumps(kb) if options.engine == "dask" else None, kb.version, audit_key,
                            options.raw_ids, options.require_consent, options.max_patient_bytes,
                            fhir_out=options.fhir_out is not None)
        if options.engine == "embedded":
            # Built before phase two forks its workers: every child inherits the compiled engine (fork
            # copies the durable-rules state with the process; only pickling it fails).
            worker_screener(settings, kb)
        timings["start_up_s"] = time.perf_counter() - k
        with _progress(len(tasks), "reading", progress) as bar:
            read = reading(bar)
        timings["partition_s"] = time.perf_counter() - t
        t = time.perf_counter()
        partition_tasks = [(work, p) for p in range(partitions)]
        order = _largest_first([ndjson.partition_size(work, p) for p in range(partitions)])
        if options.engine == "embedded":
            # The collector would write to every inherited object, copying each page into each child.
            import gc

            gc.freeze()
            try:
                deciding = runner.start(screen_partition_task, [(settings, *a) for a in partition_tasks], order)
                with _progress(len(partition_tasks), "screening", progress) as bar:
                    decided = deciding(bar)
            finally:
                gc.unfreeze()
        else:
            assert isinstance(runner, _DaskRunner)
            deciding = runner.start(screen_partition_task, partition_tasks, order, broadcast=settings)
            with _progress(len(partition_tasks), "screening", progress) as bar:
                decided = deciding(bar)
        timings["decide_s"] = time.perf_counter() - t
        t = time.perf_counter()
        written, missing = _write_outputs(out, work, inputs, read, decided, options)
        if options.fhir_out is not None:
            from cds.screen.fhir_out import join_parts

            join_parts(work, decided, storage.resolve(options.fhir_out))
        timings["write_s"] = time.perf_counter() - t
    finally:
        runner.close()
        storage.remove_tree(work)
    timings["total_s"] = time.perf_counter() - started
    summary = _summary(options, input_dir, kb.version, digest, inputs, read, decided, written, timings, started_at,
                       partitions)
    summary["policy_version"] = policy_version    # None: the rules/ files
    summary["lost"] = _losses(inputs, read, decided, missing, summary["counts"]["patients"], work)
    paths = {kind: storage.join(out, f"{kind}.csv") for kind in COLUMNS}
    paths["summary"] = storage.join(out, "summary.json")
    storage.write_text(paths["summary"], _json(summary))
    from cds.screen.report import write_report

    paths["report"] = write_report(storage.join(out, "report.html"), summary)
    result = ScreenResult(summary, out, paths)
    if summary["lost"]:
        raise ScreeningIncomplete(result)
    return result


def _losses(inputs: ndjson.Inputs, read: list[ndjson.ChunkResult], decided: list[PartitionResult],
            missing: list[str], patients: int, work: str) -> list[str]:
    """What the run lost on the way, each said in a sentence; empty when it read everything it was given."""
    lost = []
    failed: dict[str, list[str]] = {}
    for chunk in read:
        if chunk.lost:
            failed.setdefault(chunk.name, []).append(chunk.lost)
    for name, reasons in sorted(failed.items()):
        lost.append(f"{name} {reasons[0]}")
    lines = sum(r.lines for r in read)
    if not lines:
        lost.append(f"nothing was read from the {len(inputs.files)} input file(s)")
    elif not patients:
        lost.append(f"no patient was screened: none of the {lines:,} lines read named one that could be decided "
                    "(see unreadable.csv)")
    routed = sum(r.routed for r in read)
    medication_lines = sum(r.by_type.get("Medication", 0) for r in read)
    read_back = sum(r.records for r in decided) + medication_lines
    short = [r.partition for r in decided if r.medication_lines != medication_lines]
    if read_back != routed or short or missing:
        lost.append(f"phase two read back {read_back:,} of the {routed:,} resources phase one wrote to {work}"
                    + (f", and {len(missing)} of its result files are missing" if missing else "")
                    + (f", and {len(short)} partition(s) missed Medication resources" if short else "")
                    + ": the workers do not all see that folder at the same path (use --work-dir on storage "
                      "every worker sees, or an object-storage URL for --out)")
    return lost


def _unreadable_rows(inputs: ndjson.Inputs, read: list, decided: list, options: ScreenOptions) -> list[list[str]]:
    """The rows of unreadable.csv that come from the run rather than from a patient."""
    rows = [["", "export", "", "", where, reason] for where, reason in options.export_errors]
    rows += [["", "input", "", "", name, reason] for name, reason in inputs.not_read]
    for result in read:             # input lines that named no patient, were not JSON, over the limit
        rows += [[row[0], "input", "", "", row[1], row[2]] for row in result.unreadable]
    over = max((r.medications_over_limit for r in decided), default=0)
    if over:
        rows.append(["", "input", "", "", "Medication", f"the Medication resources are {over:,} bytes, over the "
                     f"limit of {options.max_patient_bytes:,} (--max-patient-bytes); none is read, and an order "
                     "naming one is not identified"])
    return rows


def _write_outputs(out: str, work: str, inputs: ndjson.Inputs, read: list, decided: list[PartitionResult],
                   options: ScreenOptions) -> tuple[dict[str, int], list[str]]:
    """Concatenate the partitions' rows (each sorted by patient) into one CSV per kind, streaming.
    Returns the rows written per kind, and the partitions' result files that were not there."""
    written: Counter = Counter()
    missing: list[str] = []
    head = _unreadable_rows(inputs, read, decided, options)
    for kind, columns in COLUMNS.items():
        first = io.StringIO(newline="")
        csv.writer(first).writerows([columns, *(head if kind == "unreadable" else [])])
        written[kind] = len(head) if kind == "unreadable" else 0
        with storage.open_file(storage.join(out, f"{kind}.csv"), "wb") as f:
            f.write(first.getvalue().encode("utf-8"))
            for result in decided:
                for name, rows in result.row_files:
                    if not name.startswith(f"{kind}-"):
                        continue
                    try:
                        with storage.open_file(storage.join(work, "rows", name)) as src:
                            while block := src.read(1 << 20):
                                f.write(block)
                    except FileNotFoundError:
                        missing.append(name)
                        continue
                    written[kind] += rows
    return dict(written), missing


def _merge(results: Iterable[PartitionResult]) -> dict[str, Counter]:
    merged: dict[str, Counter] = {"counts": Counter(), "gene_phenotype": Counter(), "drugs": Counter(),
                                  "pairs": Counter()}
    patients = 0
    for r in results:
        patients += r.patients
        for key in merged:
            merged[key].update(getattr(r, key))
    merged["counts"]["patients"] = patients
    return merged


def _summary(options: ScreenOptions, input_dir: str, kb_version: str, digest: str, inputs: ndjson.Inputs,
             read: list[ndjson.ChunkResult], decided: list[PartitionResult], written: dict[str, int],
             timings: dict[str, float], started_at: datetime, partitions: int) -> dict[str, Any]:
    merged = _merge(decided)
    by_type: Counter[str] = Counter()
    for r in read:
        by_type.update(r.by_type)
    counts = merged["counts"]
    total = timings["total_s"]
    return {
        "tool": "pgx-cds screen",
        "started_at": started_at.isoformat(),
        "run_by": _who(),
        "knowledge_version": kb_version,
        "input": {"folder": input_dir, "source": options.source, "digest": digest,
                  "files": [f.name for f in inputs.files], "lines": sum(r.lines for r in read),
                  "resources": dict(sorted(by_type.items())),
                  "not_read": [{"name": name, "reason": why} for name, why in inputs.not_read],
                  "lines_over_limit": sum(r.over_limit for r in read)},
        "limits": {"max_line_bytes": options.max_line_bytes, "max_patient_bytes": options.max_patient_bytes},
        "engine": options.engine, "workers": options.workers,
        "scheduler": options.scheduler if options.engine == "dask" else None,
        "partitions": partitions, "raw_ids": options.raw_ids, "require_consent": options.require_consent,
        "counts": {
            "patients": counts["patients"],
            "patients_with_results": counts["patients_with_results"],
            "patients_on_screened_drugs": counts["patients_on_screened_drugs"],
            "patients_actionable": counts["patients_actionable"],
            "patients_carriers": counts["patients_carriers"],
            "patients_consent_withheld": counts["patients_consent_withheld"],
            "patients_over_limit": counts["patients_over_limit"],
            **{f"rows_{kind}": written.get(kind, 0) for kind in COLUMNS},
        },
        "gene_phenotype": {k: v for k, v in sorted(merged["gene_phenotype"].items())},
        "actionable_by_drug": dict(merged["drugs"].most_common()),
        "top_drug_gene_pairs": dict(merged["pairs"].most_common(20)),
        "timings": {**{k: round(v, 3) for k, v in timings.items()},
                    "patients_per_s": round(counts["patients"] / total, 1) if total else None},
    }


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
