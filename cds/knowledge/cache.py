"""A cache of validated knowledge, so a process (the service, a screening run, each CLI command) starts
without reading and validating 176 YAML files again: about a second of every start-up, most of it
PyYAML building nodes and pydantic checking them.

An entry is keyed by a SHA-256 of everything a load depends on: the name and bytes of every file under
the root's guidelines/, rules/ and hooks/, the bundled FHIR mappings the prefetch templates expand from,
the source of the whole `cds` package, and the versions of Python, pydantic and PyYAML. The same key
means the same inputs through the same code, so the entry is what a fresh load would give; a changed
comma anywhere is a new key. Only a load that passed every check is kept: knowledge with a fault is
read and reported in full every time, and `cds validate` never reads the cache.

Entries are pickles in $CDS_KNOWLEDGE_CACHE (default $XDG_CACHE_HOME/pgx-cds, else ~/.cache/pgx-cds;
"off" turns the cache off). A pickle runs code when loaded, so an entry is trusted only as far as the
installed code is: the folder and the file must belong to this user and be writable by nobody else,
or the entry is ignored. Any entry that cannot be read is ignored and replaced; a folder that cannot
be written only costs the time saved.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import pickle
import stat
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pydantic
import pydantic_core
import yaml

log = logging.getLogger(__name__)

_PACKAGE = Path(__file__).resolve().parents[1]      # the cds package
_KNOWLEDGE_FOLDERS = ("guidelines", "rules", "hooks")
_KEPT_ENTRIES = 8                                     # older entries (earlier knowledge or code) are removed

T = TypeVar("T")


def cache_key(root: Path, extra_files: tuple[Path, ...] = ()) -> str:
    """SHA-256 of the knowledge files under `root` (and where it is: a loaded knowledge base names its
    root), `extra_files`, the cds source and the versions of Python and the libraries that load it."""
    digest = hashlib.sha256()
    # the root as given and as resolved: a knowledge base keeps the first (relative paths stay relative)
    for part in (sys.version, pydantic.VERSION, pydantic_core.__version__, yaml.__version__, str(root),
                 str(root.resolve())):
        digest.update(part.encode() + b"\0")
    for label, folder in [("cds", _PACKAGE)] + [(name, root / name) for name in _KNOWLEDGE_FOLDERS]:
        pattern = "*.py" if label == "cds" else "*"
        for path in sorted(p for p in folder.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
            digest.update(f"{label}/{path.relative_to(folder).as_posix()}".encode() + b"\0"
                          + path.read_bytes() + b"\0")
    for path in extra_files:
        digest.update(str(path).encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()


def load_through_cache(folder: Path, key: str, load: Callable[[], T]) -> T:
    """The entry stored in `folder` under `key`, else `load()` (whose result is then stored). `load`
    raising (a knowledge fault) stores nothing."""
    path = folder / f"knowledge-{key}.pickle"
    if _trusted(folder, path):
        try:
            with open(path, "rb") as f, _collector_paused():
                return pickle.load(f)
        except Exception as err:
            log.warning("knowledge cache entry %s unreadable (%s); loading the knowledge files", path.name, err)
    value = load()
    _store(folder, path, value)
    return value


@contextmanager
def _collector_paused():
    """Unpickling makes ~100k objects that all live on; the cyclic collector would scan them again and
    again as they arrive (measured: 40% of the load)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _trusted(folder: Path, path: Path) -> bool:
    try:
        return _owned_and_private(folder.stat()) and _owned_and_private(path.stat())
    except OSError:
        return False        # no entry yet (or no folder)


def _owned_and_private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _store(folder: Path, path: Path, value: object) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not _owned_and_private(folder.stat()):
            log.warning("knowledge cache folder %s is not this user's alone; not caching there", folder)
            return
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".knowledge-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, path)     # readers see the whole entry or none
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _remove_old_entries(folder)
    except Exception as err:
        log.info("knowledge cache not written to %s: %s", folder, err)


def _remove_old_entries(folder: Path) -> None:
    entries = sorted(folder.glob("knowledge-*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[_KEPT_ENTRIES:]:
        old.unlink(missing_ok=True)
