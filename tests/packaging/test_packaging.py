"""What an operator installs is what we test: the wheel carries the bundled knowledge, installs with the
exact versions of constraints.txt, and the Dockerfile passes hadolint and runs the same install script
(docker/install.sh) that is run here in a clean virtual environment (CI has no Docker engine)."""
from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pgx_paths import REPO

KNOWLEDGE_DIRS = ("guidelines", "rules", "hooks")
DATA_PREFIX = "share/pgx-cds/"


def _knowledge_files() -> set[str]:
    """Every knowledge file of the checkout (tracked by git when this is a clone)."""
    if (REPO / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", *KNOWLEDGE_DIRS], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.split()
        return {f for f in listed if (REPO / f).is_file()}
    return {str(p.relative_to(REPO)) for d in KNOWLEDGE_DIRS for p in (REPO / d).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "-w", str(out), str(REPO)], check=True, capture_output=True)
    return next(out.glob("pgx_cds-*.whl"))


def _data_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    out = set()
    for name in names:
        _, sep, rest = name.partition(".data/data/" + DATA_PREFIX)
        if sep:
            out.add(rest)
    return out


def test_the_wheel_carries_every_knowledge_file(wheel: Path) -> None:
    assert _data_files(wheel) == _knowledge_files()


def test_the_wheel_declares_its_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(z.read(meta_name))
        licenses = {Path(n).name for n in z.namelist() if ".dist-info/licenses/" in n}
    assert metadata["License-Expression"] == "Apache-2.0"
    assert licenses == {"LICENSE", "NOTICE"}


def test_an_installed_wheel_finds_its_knowledge_without_a_knowledge_dir(wheel: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--ignore-installed",  # else pip uninstalls the editable pgx-cds of the running venv
                    "--prefix", str(prefix), str(wheel)], check=True, capture_output=True)
    site = next(prefix.glob("lib/python3*/site-packages"))
    env = {k: v for k, v in os.environ.items() if k != "CDS_KNOWLEDGE_DIR"} | {"PYTHONPATH": str(site)}
    installed = subprocess.run([sys.executable, "-m", "cds.cli", "version"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=True).stdout
    checkout = subprocess.run([sys.executable, "-m", "cds.cli", "version"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout
    assert str(prefix / "share" / "pgx-cds") in installed.splitlines()[1]
    # The same knowledge version: the content hash of the installed files equals the checkout's.
    assert installed.splitlines()[1].split()[3] == checkout.splitlines()[1].split()[3]


def test_cds_version_flag() -> None:
    from cds import __version__

    out = subprocess.run([sys.executable, "-m", "cds.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pgx-cds {__version__}"


def test_the_openapi_document_states_the_package_version() -> None:
    from cds import __version__
    from cds.service.openapi import openapi_document

    assert openapi_document([])["info"]["version"] == __version__


def test_the_changelog_has_an_entry_for_the_version() -> None:
    from cds import __version__

    headings = [line for line in (REPO / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")]
    assert headings and headings[0].startswith(f"## {__version__} "), headings[:1]


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dependency_pin_agrees_with_the_lock() -> None:
    """pyproject's == pins and constraints.txt must not disagree, or no install could satisfy both."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    locked = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            locked[_normal(name)] = version
    for pin in pins:
        name, _, version = pin.partition("==")
        name = _normal(name.split("[")[0])
        assert name in locked, f"{name} is pinned in pyproject.toml but not in constraints.txt (make constraints)"
        assert locked[name] == version, f"{name}: pyproject {version}, constraints.txt {locked[name]}"


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


@pytest.mark.skipif(not os.environ.get("CI") and not os.environ.get("CDS_TEST_INSTALL"),
                    reason="a full clean install takes minutes; CI runs it (or set CDS_TEST_INSTALL=1)")
def test_the_image_install_steps_work_in_a_clean_venv(tmp_path: Path) -> None:
    """docker/install.sh is the Dockerfile's build stage: a clean venv, the wheel, constraints, validate."""
    result = subprocess.run(["sh", str(REPO / "docker" / "install.sh"), str(REPO), str(tmp_path / "venv")],
                            capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("OK: "), result.stdout
    served = subprocess.run([str(tmp_path / "venv" / "bin" / "cds"), "--version"], capture_output=True, text=True)
    assert served.stdout.startswith("pgx-cds ")


def test_the_service_installs_without_a_cluster_scheduler_or_bench_tools() -> None:
    """dask/distributed are the `dask` extra and psutil the `bench` extra (README: --engine dask)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_normal(d.partition("==")[0].split("[")[0]) for d in project["dependencies"]}
    assert core.isdisjoint({"dask", "distributed", "psutil"}), sorted(core & {"dask", "distributed", "psutil"})
    assert {"dask", "distributed"} <= {_normal(d.partition("==")[0]) for d in project["optional-dependencies"]["dask"]}


def test_every_module_the_package_imports_is_a_declared_dependency() -> None:
    """An import that works only because another package happens to pull it in breaks the day that
    package stops; every third-party module cds/ imports is declared (core, or the extra that needs it)."""
    import ast
    import importlib.metadata
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_normal(d.partition("==")[0].split("[")[0]) for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_normal(d.partition("==")[0].split("[")[0]) for d in extra}
    distributions = importlib.metadata.packages_distributions()
    undeclared = set()
    for path in (REPO / "cds").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "cds":
                    continue
                if not any(_normal(d) in declared for d in distributions.get(top, [top])):
                    undeclared.add(f"{top} ({path.relative_to(REPO)})")
    assert not undeclared, f"imported but not declared in pyproject.toml: {sorted(undeclared)}"


def test_python_dash_m_cds_is_the_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "cds", "--version"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pgx-cds ")


def test_screening_on_dask_without_the_dask_extra_says_which_extra_to_install(tmp_path: Path) -> None:
    """The service installs without dask; `--engine dask` there is a sentence, not a traceback.
    (distributed is made unimportable in the child, as it is where the extra was not installed.)"""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "Patient.ndjson").write_text('{"resourceType": "Patient", "id": "p1"}\n')
    code = ("import sys; sys.modules['distributed'] = None; from cds.cli import main; "
            f"sys.exit(main(['screen', {str(tmp_path / 'in')!r}, '--out', {str(tmp_path / 'out')!r}, "
            "'--engine', 'dask']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "pgx-cds[dask]" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
