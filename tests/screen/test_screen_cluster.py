"""Screening on a real dask cluster and on object storage: a `dask scheduler` and two `dask worker`
processes started in folders of their own, as on other machines, and moto's S3 server on loopback.

Each worker runs in a mount namespace of its own where the client's private folder is an empty tmpfs
(`unshare`), as a machine that does not share it: input there is lost, and so is a scratch folder
there, and the run says so with a non-zero exit instead of screening nobody."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from live_service import free_port

KEY = b"k" * 40
BIN = Path(sys.executable).parent
OUTPUTS = ("actionable.csv", "testing.csv", "carriers.csv", "unreadable.csv", "withheld.csv", "no_card.csv")
S3_ENV = {"AWS_ACCESS_KEY_ID": "pgx-test", "AWS_SECRET_ACCESS_KEY": "pgx-test", "AWS_DEFAULT_REGION": "us-east-1"}


def _can_hide_folders() -> bool:
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port; the AWS variables point every process at it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)     # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("cohorts")
        yield fs, env
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    """A scheduler and two single-thread workers, each process started in its own folder."""
    from distributed import Client

    root = tmp_path_factory.mktemp("cluster")
    private = root / "client-only"
    private.mkdir()
    hide = _can_hide_folders()
    env = {**os.environ, **s3[1]}
    scheduler_file = root / "scheduler.json"
    processes = []
    try:
        (root / "scheduler").mkdir()
        processes.append(subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            cwd=root / "scheduler", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline and processes[0].poll() is None, "dask scheduler did not start"
            time.sleep(0.1)
        for i in range(2):
            folder = root / f"worker-{i}"
            folder.mkdir()
            command = [str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                       "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(folder)]
            if hide:
                command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "sh", str(private), *command]
            processes.append(subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield {"address": address, "root": root, "private": private if hide else None}
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


def run(input_dir, out, **kwargs):
    from cds.screen.run import ScreenOptions, screen

    return screen(ScreenOptions(input_dir=input_dir, out=out, audit_key=KEY, progress=False, **kwargs))


@pytest.fixture(scope="module")
def embedded(small_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    return out, run(small_cohort, out, workers=1).summary


def test_a_cluster_in_other_folders_screens_an_input_given_by_a_relative_path(cluster, small_cohort, embedded,
                                                                               monkeypatch):
    here = cluster["root"] / "client"
    shutil.copytree(small_cohort, here / "cohort")
    monkeypatch.chdir(here)
    result = run("cohort", "screened", engine="dask", scheduler=cluster["address"])
    out, summary = embedded
    assert result.summary["counts"] == summary["counts"] and summary["counts"]["patients"] == 40
    assert result.summary["input"]["folder"] == str(here / "cohort")
    for name in OUTPUTS:
        assert (here / "screened" / name).read_text() == (out / name).read_text(), name


def test_input_the_workers_cannot_see_is_lost_and_the_run_exits_non_zero(cluster, small_cohort, tmp_path, capsys):
    from cds.cli import main

    if cluster["private"] is None:
        pytest.skip("needs `unshare --mount` (root) to give the workers a view without the client's folder")
    shutil.copytree(small_cohort, cluster["private"] / "cohort")
    status = main(["screen", str(cluster["private"] / "cohort"), "--out", str(cluster["root"] / "lost-input"),
                   "--engine", "dask", "--scheduler", cluster["address"], "--no-record"])
    err = capsys.readouterr().err
    assert status == 1 and "screening incomplete" in err
    for name in sorted(p.name for p in small_cohort.glob("*.ndjson")):
        assert f"{name} could not be read to the end" in err, name
    with open(cluster["root"] / "lost-input" / "unreadable.csv", newline="") as f:
        lost = {r["where"] for r in csv.DictReader(f) if r["reason"].startswith("file could not be read")}
    assert lost == {p.name for p in small_cohort.glob("*.ndjson")}


def test_a_scratch_folder_the_workers_do_not_share_is_a_loss(cluster, small_cohort, capsys):
    from cds.cli import main

    if cluster["private"] is None:
        pytest.skip("needs `unshare --mount` (root) to give the workers a view without the client's folder")
    status = main(["screen", str(small_cohort), "--out", str(cluster["private"] / "out"), "--engine", "dask",
                   "--scheduler", cluster["address"], "--no-record"])
    err = capsys.readouterr().err
    assert status == 1 and "the workers do not all see that folder at the same path" in err


def _s3_outputs(fs, prefix: str) -> dict[str, str]:
    return {name: fs.cat(f"{prefix}/{name}").decode() for name in OUTPUTS}


def test_s3_input_and_output_on_the_cluster_and_embedded(cluster, s3, small_cohort, embedded):
    fs, _ = s3
    fs.put(str(small_cohort) + "/", "cohorts/export/", recursive=True)
    assert sorted(fs.ls("cohorts/export")) == sorted(f"cohorts/export/{p.name}" for p in small_cohort.iterdir())
    out, summary = embedded
    on_cluster = run("s3://cohorts/export", "s3://cohorts/screened-dask", engine="dask", scheduler=cluster["address"])
    local_workers = run("s3://cohorts/export/", "s3://cohorts/screened-embedded", workers=2)
    for result, prefix in ((on_cluster, "cohorts/screened-dask"), (local_workers, "cohorts/screened-embedded")):
        assert result.summary["counts"] == summary["counts"]
        assert result.summary["input"]["digest"] == summary["input"]["digest"]
        assert _s3_outputs(fs, prefix) == {name: (out / name).read_bytes().decode() for name in OUTPUTS}
        assert json.loads(fs.cat(f"{prefix}/summary.json"))["input"]["folder"] == "s3://cohorts/export"
        assert fs.exists(f"{prefix}/report.html")
        # the scratch partitions are gone from the bucket (the cluster's were inside OUT)
        assert not [p for p in fs.find(prefix) if "/.screen-" in p]


def test_an_unknown_or_uninstalled_filesystem_is_a_clear_error(tmp_path, capsys):
    from cds.cli import main

    assert main(["screen", "nosuchfs://bucket/export", "--out", str(tmp_path / "o"), "--no-record"]) == 1
    assert "nosuchfs://bucket/export" in capsys.readouterr().err
