"""A screening run from end to end: partition the export to disk, decide partition by partition on
local worker processes (embedded, the default) or on a dask.distributed cluster, then write the
outputs. Both engines run the same two functions (ndjson.partition_chunk, patients.screen_partition_task);
only who runs them differs.
"""
from __future__ import annotations

import csv
import getpass
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from cds.errors import CdsError
from cds.screen import ndjson
from cds.screen.outputs import COLUMNS

if TYPE_CHECKING:
    from cds.screen.patients import PartitionResult

ENGINES = ("embedded", "dask")


@dataclass
class ScreenOptions:
    input_dir: Path
    out: Path
    workers: int = os.cpu_count() or 1
    engine: str = "embedded"
    scheduler: str | None = None           # dask scheduler address; None: a LocalCluster
    raw_ids: bool = False
    require_consent: bool = False
    knowledge_dir: Path | None = None
    work_dir: Path | None = None           # scratch for the partitions (default: inside OUT)
    progress: bool | None = None           # None: a bar when stderr is a terminal
    audit_key: bytes | None = None
    source: str | None = None              # e.g. the Bulk Data server it came from
    export_errors: list[tuple[str, str]] = field(default_factory=list)   # what the server could not export


@dataclass
class ScreenResult:
    summary: dict[str, Any]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> "_NoBar":
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
    scheduler is at `address`. Workers must see the input and scratch folders at the same paths
    (a shared filesystem on a real cluster)."""

    def __init__(self, workers: int, address: str | None):
        from distributed import Client, LocalCluster

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


def screen(options: ScreenOptions) -> ScreenResult:
    from cds.store.pseudonym import load_audit_key

    if options.engine not in ENGINES:
        raise CdsError(f"--engine must be one of {', '.join(ENGINES)}, not {options.engine!r}")
    if options.workers < 1:
        raise CdsError("--workers must be at least 1")
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    files = ndjson.input_files(options.input_dir)
    audit_key = load_audit_key(options.audit_key)
    progress = sys.stderr.isatty() if options.progress is None else options.progress
    options.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".screen-", dir=options.work_dir or options.out))
    timings: dict[str, float] = {}
    runner = _DaskRunner(options.workers, options.scheduler) if options.engine == "dask" \
        else _EmbeddedRunner(options.workers)
    try:
        partitions = ndjson.partition_count(files, 4)   # not of --workers: outputs never depend on it
        chunk_list = ndjson.chunks(files)
        t = time.perf_counter()
        # Phase one runs on the workers while this process hashes the input, loads the knowledge and
        # (embedded) compiles the engine the phase-two workers inherit: on a few cores, the start-up
        # overlaps the reading instead of preceding it. (One worker: all of it here, in turn.)
        tasks = [(c, i, str(work), partitions) for i, c in enumerate(chunk_list)]
        reading = runner.start(ndjson.partition_chunk, tasks,
                               _largest_first([ndjson.chunk_size(c) for c in chunk_list]))
        k = time.perf_counter()
        # The decision code is imported only now (a quarter of a second): phase one's workers were
        # forked without it and are already reading.
        from cds.knowledge.loader import load_knowledge
        from cds.screen.patients import Settings, screen_partition_task, worker_screener

        digest = ndjson.input_digest(files)
        kb = load_knowledge(options.knowledge_dir)
        # dask workers build their own Screener from the pickled knowledge; embedded ones inherit the parent's.
        settings = Settings(pickle.dumps(kb) if options.engine == "dask" else None, kb.version, audit_key,
                            options.raw_ids, options.require_consent)
        if options.engine == "embedded":
            # Built before phase two forks its workers: every child inherits the compiled engine (fork
            # copies the durable-rules state with the process; only pickling it fails).
            worker_screener(settings, kb)
        timings["start_up_s"] = time.perf_counter() - k
        with _progress(len(tasks), "reading", progress) as bar:
            read = reading(bar)
        timings["partition_s"] = time.perf_counter() - t
        t = time.perf_counter()
        tasks = [(str(work), p) for p in range(partitions)]
        order = _largest_first([ndjson.partition_size(str(work), p) for p in range(partitions)])
        if options.engine == "embedded":
            # The collector would write to every inherited object, copying each page into each child.
            import gc

            gc.freeze()
            try:
                deciding = runner.start(screen_partition_task, [(settings, *a) for a in tasks], order)
                with _progress(len(tasks), "screening", progress) as bar:
                    decided = deciding(bar)
            finally:
                gc.unfreeze()
        else:
            deciding = runner.start(screen_partition_task, tasks, order, broadcast=settings)
            with _progress(len(tasks), "screening", progress) as bar:
                decided = deciding(bar)
        timings["decide_s"] = time.perf_counter() - t
        t = time.perf_counter()
        written = _write_outputs(options.out, work, partitions, read, options.export_errors)
        timings["write_s"] = time.perf_counter() - t
    finally:
        runner.close()
        shutil.rmtree(work, ignore_errors=True)
    timings["total_s"] = time.perf_counter() - started
    summary = _summary(options, kb.version, digest, files, read, decided, written, timings, started_at, partitions)
    paths = {kind: options.out / f"{kind}.csv" for kind in COLUMNS}
    (options.out / "summary.json").write_text(_json(summary), encoding="utf-8")
    from cds.screen.report import write_report

    paths["report"] = write_report(options.out / "report.html", summary)
    paths["summary"] = options.out / "summary.json"
    return ScreenResult(summary, options.out, paths)


def _write_outputs(out: Path, work: Path, partitions: int, read: list,
                   export_errors: list[tuple[str, str]]) -> dict[str, int]:
    """Concatenate the partitions' rows (each sorted by patient) into one CSV per kind, streaming."""
    written = Counter()
    for kind, columns in COLUMNS.items():
        with open(out / f"{kind}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            if kind == "unreadable":
                for where, reason in export_errors:
                    writer.writerow(["", "export", "", "", where, reason])
                    written[kind] += 1
                for result in read:             # input lines that named no patient or were not JSON
                    for row in result.unreadable:
                        writer.writerow([row[0], "input", "", "", row[1], row[2]])
                        written[kind] += 1
            f.flush()
            for p in range(partitions):
                part = work / "rows" / f"{kind}-{p:05d}.csv"
                if part.exists():
                    with open(part, encoding="utf-8", newline="") as src:
                        for line in src:
                            f.write(line)
                            written[kind] += 1
    return dict(written)


def _merge(results: Iterable[PartitionResult]) -> dict[str, Counter]:
    merged = {"counts": Counter(), "gene_phenotype": Counter(), "drugs": Counter(), "pairs": Counter()}
    patients = 0
    for r in results:
        patients += r.patients
        for key in merged:
            merged[key].update(getattr(r, key))
    merged["counts"]["patients"] = patients
    return merged


def _summary(options: ScreenOptions, kb_version: str, digest: str, files: list[Path], read: list,
             decided: list[PartitionResult], written: dict[str, int], timings: dict[str, float],
             started_at: datetime, partitions: int) -> dict[str, Any]:
    merged = _merge(decided)
    by_type = Counter()
    for r in read:
        by_type.update(r.by_type)
    counts = merged["counts"]
    total = timings["total_s"]
    return {
        "tool": "pgx-cds screen",
        "started_at": started_at.isoformat(),
        "run_by": _who(),
        "knowledge_version": kb_version,
        "input": {"folder": str(options.input_dir), "source": options.source, "digest": digest,
                  "files": [p.name for p in files], "lines": sum(r.lines for r in read),
                  "resources": dict(sorted(by_type.items()))},
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
