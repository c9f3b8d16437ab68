"""Load benchmark of the CDS Hooks service (issue 3), with a real load generator (`hey`, Debian package
`hey`: apt-get install -y hey) against gunicorn on loopback.

In one run, against one server started by this script (`cds serve`, audit on, SQLite):
1. maximum throughput of a trivial endpoint of the same app (GET /cds-services, discovery) and of
   order-select with prefetch (3 genotype Observations, 2 draft orders), alternating for several
   rounds: this virtual machine's CPU speed drifts by a factor of two within minutes, so each round's
   ratio compares phases run back to back, and the median round is reported;
2. order-select again at half its (median) maximum throughput, for its latency under a sustainable load.

With --fixed-decision the server answers every call with the first call's decision
(bench/serve_fixed_decision.py): what order-select costs beside the decision core, the bound on the
ratio that a faster core could reach. CDS_AUDIT=false in the environment turns the audit off.

    python bench/load_service.py [--seconds 5] [--rounds 5] [--concurrency 16] [--fixed-decision]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "http"))
from fhirdata import genotype, hook_request, medication_request, searchset  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def order_select_body() -> dict:
    genomics = searchset(genotype("CYP2C19", "*2/*2"), genotype("CYP2D6", "*1/*4"), genotype("SLCO1B1", "*5/*5"))
    return hook_request("order-select", medication_request("clopidogrel", "a"), medication_request("simvastatin", "b"),
                        genomics=genomics)


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the server process and its workers (Linux /proc), so each phase
    also says how much server CPU one request took, whatever the load generator spent beside it."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue   # a process that ended meanwhile
        if int(fields[1]) == pid or stat.parent.name == str(pid):   # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_hey(url: str, seconds: int, concurrency: int, body: Path | None = None, qps_per_worker: float | None = None,
            server_pid: int | None = None) -> dict:
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-disable-keepalive=false"]
    if qps_per_worker:
        cmd += ["-q", f"{qps_per_worker:.2f}"]
    if body:
        cmd += ["-m", "POST", "-T", "application/json", "-D", str(body)]
    cpu_before = server_cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    cpu = server_cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): float(v) * 1000 for p, v in re.findall(r"(\d+)%% in ([\d.]+) secs".replace("%%", "%"), out)}
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    answered = sum(int(n) for n in codes.values())
    return {"rps": rps, "p50": pct.get(50), "p99": pct.get(99), "codes": codes,
            "cpu_us": 1e6 * cpu / answered if answered else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fixed-decision", action="store_true",
                        help="answer every call with the first call's decision (bench/serve_fixed_decision.py)")
    args = parser.parse_args()
    if not shutil.which("hey"):
        sys.exit("needs the load generator 'hey': apt-get install -y hey")

    work = Path(tempfile.mkdtemp(prefix="pgx-load-"))
    port = free_port()
    env = {**os.environ, "CDS_AUTH": "off", "DATABASE_URL": f"sqlite:///{work / 'audit.sqlite3'}",
           "CDS_SPOOL_DIR": str(work / "spool"), "CDS_THREADS": str(args.threads), "CDS_AUDIT_KEY": "x" * 32, "CDS_LOG_LEVEL": "WARNING"}
    program = [str(REPO / "bench" / "serve_fixed_decision.py")] if args.fixed_decision else ["-m", "cds.cli"]
    server = subprocess.Popen([sys.executable, *program, "serve", "--port", str(port), "--workers", str(args.workers)],
                              env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/cds-services", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            sys.exit("server did not start: " + server.stderr.read())
        body = work / "order-select.json"
        body.write_text(json.dumps(order_select_body()))
        check = requests.post(f"{base}/cds-services/pgx-order-select", data=body.read_bytes(),
                              headers={"Content-Type": "application/json"}, timeout=10).json()
        assert len(check["cards"]) == 2, check   # clopidogrel and simvastatin both alert

        rounds = []
        for _ in range(args.rounds):
            trivial = run_hey(f"{base}/cds-services", args.seconds, args.concurrency, server_pid=server.pid)
            hook = run_hey(f"{base}/cds-services/pgx-order-select", args.seconds, args.concurrency, body,
                           server_pid=server.pid)
            rounds.append((hook["rps"] / trivial["rps"], trivial, hook))
        rounds.sort(key=lambda r: r[0])
        _, trivial, hook = rounds[len(rounds) // 2]
        half_rate = statistics.median(r[2]["rps"] for r in rounds) / 2
        half = run_hey(f"{base}/cds-services/pgx-order-select", args.seconds, args.concurrency, body,
                       qps_per_worker=half_rate / args.concurrency, server_pid=server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    audit = "off" if env.get("CDS_AUDIT", "").lower() in ("0", "false", "no", "off") else "on"
    print(f"gunicorn: {args.workers} workers x {args.threads} threads; hey: {args.concurrency} connections, "
          f"{args.seconds} s per phase; audit {audit}" + ("; decision FIXED (first call's answer)" if args.fixed_decision else ""))
    print("per round, order-select/trivial throughput: " + ", ".join(f"{r[0]:.2f}" for r in rounds)
          + f" (median {rounds[len(rounds) // 2][0]:.2f}); the median round:")
    print(f"{'endpoint':44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU µs/req':>18}  status codes")
    for name, r in (("GET /cds-services (trivial), max", trivial),
                    ("POST order-select (3 obs, 2 orders), max", hook),
                    (f"POST order-select at {half_rate:.0f} req/s (half max)", half)):
        print(f"{name:44} {r['rps']:8.0f} {r['p50']:8.1f} {r['p99']:8.1f} {r['cpu_us']:18.0f}  {r['codes']}")
    print(f"order-select / trivial throughput (median round): {hook['rps'] / trivial['rps']:.2f}")
    print(f"order-select p99 at half of its maximum throughput: {half['p99']:.1f} ms")


if __name__ == "__main__":
    main()
