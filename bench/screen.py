"""Screening throughput and memory, in one run, against the parse-only floor measured in the same run.

For 10k and 100k synthetic patients (`cds synth`, not clinical data):
  floor        read the same NDJSON with orjson and group the resources by patient, nothing else
  embedded ×1  `cds screen --workers 1`
  embedded ×2  `cds screen --workers 2`
  dask ×2      `cds screen --engine dask --workers 2` (a LocalCluster)
  dask cluster ×2  `cds screen --engine dask --scheduler ADDR`: a `dask scheduler` and two
               `dask worker --nthreads 1` processes started afresh for the run (not counted in its wall
               time), each in a folder of its own, as on a real cluster
Each `cds screen` runs as its own process; its peak memory is the largest sum of PSS over its process
tree (workers, dask scheduler and nannies included; for the cluster, the scheduler's and workers' trees
too; shared pages counted once), sampled every 0.5 s.
patients/s is end to end (knowledge loading and rule compilation included) and, in brackets, of the
decide phase alone. cpu: CPU seconds of the whole process tree (user + system), which other load on
the machine changes far less than wall time; waited: seconds its processes were ready to run but had
no core (behind other processes, or behind each other; /proc/PID/schedstat, sampled every 0.5 s).
A 1-patient run first gives the start-up every run pays (once with the knowledge cache empty, as the
first run after installing or changing pgx-cds has it, then with it filled); "beyond start-up" is
×2 / ×1 of wall time less it. Each size runs in rounds of every configuration back to back; ratios are
taken within a round. Ratios: embedded ×2 / floor, ×2 / ×1, peak at 100k / peak at 10k. Then a 1M
estimate.

    .venv/bin/python bench/screen.py [--sizes 10000 100000] [--rounds 3] [--keep DIR] [--runs NAME …] [--no-floor]

For a million patients, measured rather than extrapolated (the floor holds the whole cohort in memory,
so it is left out; about 1.5 GB of NDJSON, 3 GB of disk with the scratch):

    .venv/bin/python bench/screen.py --sizes 1000000 --rounds 2 --no-floor --runs "embedded ×2" "dask cluster ×2"
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson
import psutil

REPO = Path(__file__).resolve().parents[1]
CDS = str(Path(sys.executable).parent / "cds")
RUNS = (("embedded ×1", ["--workers", "1"]), ("embedded ×2", ["--workers", "2"]),
        ("dask ×2", ["--engine", "dask", "--workers", "2"]), ("dask cluster ×2", ["--engine", "dask", "--scheduler"]))
DASK = str(Path(sys.executable).parent / "dask")


class Cluster:
    """A `dask scheduler` and two single-thread `dask worker` processes, each started in its own folder."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        scheduler_file = root / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        (root / "scheduler").mkdir(exist_ok=True)
        self.processes = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                            "--scheduler-file", str(scheduler_file)], cwd=root / "scheduler", **quiet)]
        while not scheduler_file.exists():
            if self.processes[0].poll() is not None:
                raise SystemExit("dask scheduler did not start")
            time.sleep(0.1)
        for i in range(2):
            (root / f"worker-{i}").mkdir(exist_ok=True)
            self.processes.append(subprocess.Popen(
                [DASK, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--no-dashboard",
                 "--host", "127.0.0.1", "--local-directory", str(root / f"worker-{i}")], cwd=root / f"worker-{i}", **quiet))
        self.address = json.loads(scheduler_file.read_text())["address"]
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)

    def close(self) -> None:
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def floor(folder: Path) -> tuple[int, float]:
    """Patients per second of reading and grouping alone (one process)."""
    started = time.perf_counter()
    groups: dict[str, list] = defaultdict(list)
    for path in sorted(folder.glob("*.ndjson")):
        with open(path, "rb") as f:
            for line in f:
                r = orjson.loads(line)
                if r["resourceType"] == "Patient":
                    groups[r["id"]].append(r)
                else:
                    holder = r.get("patient") if r["resourceType"] == "Consent" else r.get("subject")
                    groups[holder["reference"].rsplit("/", 1)[-1]].append(r)
    return len(groups), time.perf_counter() - started


def tree_pss(proc: psutil.Process, waited: dict[int, float]) -> int:
    """Proportional set size summed over the tree: pages forked children share are counted once.
    Notes in `waited` each process's seconds runnable but waiting for a core (/proc/PID/schedstat)."""
    total = 0
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:              # a process of the tree ended while it was being listed
        tree = [proc]
    for p in tree:
        try:
            total += p.memory_full_info().pss
            with open(f"/proc/{p.pid}/schedstat") as f:
                waited[p.pid] = int(f.read().split()[1]) / 1e9
        except (psutil.Error, OSError, IndexError, ValueError):
            pass
    return total


def _cpu_of(processes: list[subprocess.Popen]) -> float:
    total = 0.0
    for p in processes:
        try:
            times = psutil.Process(p.pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def run_screen(folder: Path, out: Path, extra: list[str], knowledge_cache: Path) -> dict:
    """One `cds screen`; with "--scheduler" last in `extra`, on a cluster started for it."""
    cluster = None
    if extra[-1] == "--scheduler":
        cluster = Cluster(out.parent / f"{out.name}-cluster")
        extra = [*extra, cluster.address]
    try:
        return _run_screen(folder, out, extra, knowledge_cache, cluster)
    finally:
        if cluster:
            cluster.close()
            shutil.rmtree(cluster.root, ignore_errors=True)


def _run_screen(folder: Path, out: Path, extra: list[str], knowledge_cache: Path, cluster: "Cluster | None") -> dict:
    env = {**os.environ, "CDS_AUDIT_KEY": "b" * 40, "CDS_KNOWLEDGE_CACHE": str(knowledge_cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cluster_before = _cpu_of(cluster.processes) if cluster else 0.0
    started = time.perf_counter()
    proc = subprocess.Popen([CDS, "screen", str(folder), "--out", str(out), "--no-record", "--no-progress", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    watched = [psutil.Process(proc.pid), *(psutil.Process(p.pid) for p in (cluster.processes if cluster else []))]
    peak = [0]
    waited: dict[int, float] = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], sum(tree_pss(p, waited) for p in watched))
            # One PSS reading of the tree costs ~10 ms of CPU (a page-table walk): every 0.1 s it took
            # a tenth of a core from the runs it measures, the ×2 runs most.
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if cluster:         # its processes outlive the run: their CPU is read from them, not from rusage
        cpu += _cpu_of(cluster.processes) - cluster_before
    if proc.returncode != 0:
        raise SystemExit(f"cds screen failed: {stderr.decode()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    patients = summary["counts"]["patients"]
    return {"patients": patients, "wall_s": wall, "cpu_s": cpu, "waited_s": sum(waited.values()),
            "per_s": patients / wall,
            "decide_per_s": patients / summary["timings"]["decide_s"], "peak_mib": peak[0] / 2**20}


def _median_run(runs: list[dict]) -> dict:
    """The run of median throughput, with the largest peak memory of all of them."""
    chosen = dict(sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2])
    if "peak_mib" in chosen:
        chosen["peak_mib"] = max(r["peak_mib"] for r in runs)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keep", help="keep the cohorts here (default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run per size (default 3)")
    parser.add_argument("--runs", nargs="+", choices=[name for name, _ in RUNS], default=[name for name, _ in RUNS[:3]],
                        help="which runs (default: embedded ×1, embedded ×2, dask ×2)")
    parser.add_argument("--no-floor", action="store_true", help="leave out the floor (it holds the whole cohort in memory)")
    args = parser.parse_args()
    runs = [(name, extra) for name, extra in RUNS if name in args.runs]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-screen-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    results: dict[int, dict[str, dict]] = {}
    try:
        # What every run pays whatever its size (imports, knowledge, rule compilation, worker start,
        # interpreter exit): one patient, so the sizes below can be read beside it.
        tiny = root / "cohort-1"
        if not (tiny / "Patient.ndjson").exists():
            subprocess.run([CDS, "synth", "--patients", "1", "--out", str(tiny)], check=True, stdout=subprocess.DEVNULL)
        # The knowledge cache (cds.knowledge.cache) is this run's own: the first start-up fills it, as
        # the first run after installing (or changing) pgx-cds does; every later run reads it.
        knowledge_cache = root / "knowledge-cache"
        shutil.rmtree(knowledge_cache, ignore_errors=True)
        cold = run_screen(tiny, root / "out-1-cold", ["--workers", "1"], knowledge_cache)
        shutil.rmtree(root / "out-1-cold", ignore_errors=True)
        start_up = {}
        for name, extra in RUNS[:2]:
            out = root / f"out-1-{extra[-1]}"
            start_up[name] = run_screen(tiny, out, extra, knowledge_cache)
            shutil.rmtree(out, ignore_errors=True)
        print(f"start-up (1 patient): first run, knowledge cache empty {cold['wall_s']:.1f} s (cpu {cold['cpu_s']:.1f} s); "
              + ";  ".join(f"{name} {r['wall_s']:.1f} s (cpu {r['cpu_s']:.1f} s)" for name, r in start_up.items()), flush=True)
        for size in args.sizes:
            cohort = root / f"cohort-{size}"
            if not (cohort / "Patient.ndjson").exists():
                subprocess.run([CDS, "synth", "--patients", str(size), "--out", str(cohort)], check=True,
                               stdout=subprocess.DEVNULL)
            mib = sum(p.stat().st_size for p in cohort.glob("*.ndjson")) / 2**20
            # Rounds of every run back to back: this VM's CPU speed drifts within minutes, so each
            # ratio is taken within a round and the median round is reported.
            rounds = []
            for _ in range(args.rounds):
                one_round = {}
                if not args.no_floor:
                    patients, seconds = floor(cohort)
                    one_round["floor"] = {"patients": patients, "wall_s": seconds, "per_s": patients / seconds}
                for name, extra in runs:
                    out = root / f"out-{size}-{name.replace(' ', '-')}"
                    one_round[name] = r = run_screen(cohort, out, extra, knowledge_cache)
                    shutil.rmtree(out, ignore_errors=True)
                    # each run as it ends: a million patients take minutes per run on a busy machine
                    print(f"  round {len(rounds) + 1}, {name}: {r['per_s']:.0f} patients/s ({r['wall_s']:.1f} s, "
                          f"cpu {r['cpu_s']:.1f} s, waited {r['waited_s']:.1f} s), peak {r['peak_mib']:.0f} MiB, "
                          f"load average {os.getloadavg()[0]:.1f}", flush=True)
                rounds.append(one_round)
            results[size] = {name: _median_run([r[name] for r in rounds]) for name in rounds[0]}
            print(f"\n{size} patients ({mib:.0f} MiB NDJSON), median of {len(rounds)} rounds (peak: the largest)")
            if "floor" in results[size]:
                floor_run = results[size]["floor"]
                print(f"  {'floor (orjson + group)':24} {floor_run['per_s']:9.0f} patients/s  ({floor_run['wall_s']:.1f} s)")
            for name, _ in runs:
                r = results[size][name]
                print(f"  {name:24} {r['per_s']:9.0f} patients/s  ({r['wall_s']:.1f} s, cpu {r['cpu_s']:.1f} s, "
                      f"waited {r['waited_s']:.1f} s; decide phase "
                      f"{r['decide_per_s']:.0f}/s)  peak {r['peak_mib']:.0f} MiB")

            def ratio(fn) -> str:
                values = sorted(fn(r) for r in rounds)
                return f"{values[len(values) // 2]:.2f}" + (f" [{', '.join(f'{v:.2f}' for v in values)}]" if len(values) > 1 else "")

            have = set(rounds[0])
            one_up = start_up["embedded ×1"]["wall_s"]
            two_up = start_up["embedded ×2"]["wall_s"]
            if {"floor", "embedded ×2"} <= have:
                print(f"  embedded ×2 / floor:   {ratio(lambda r: r['embedded ×2']['per_s'] / r['floor']['per_s'])}")
            if {"embedded ×1", "embedded ×2"} <= have:
                print(f"  embedded ×2 / ×1:      {ratio(lambda r: r['embedded ×2']['per_s'] / r['embedded ×1']['per_s'])}"
                      f"   decide phase {ratio(lambda r: r['embedded ×2']['decide_per_s'] / r['embedded ×1']['decide_per_s'])}"
                      f"   beyond start-up {ratio(lambda r: (r['embedded ×1']['wall_s'] - one_up) / (r['embedded ×2']['wall_s'] - two_up))}")
            for dask in ("dask ×2", "dask cluster ×2"):
                if {dask, "embedded ×2"} <= have:
                    print(f"  {dask} / embedded ×2: {ratio(lambda r: r[dask]['per_s'] / r['embedded ×2']['per_s'])}")
        if len(args.sizes) >= 2:
            small, large = args.sizes[0], args.sizes[-1]
            print(f"\npeak memory {large} / {small}:")
            for name, _ in runs:
                print(f"  {name:24} {results[large][name]['peak_mib'] / results[small][name]['peak_mib']:.2f}×")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other processes share these cores)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
