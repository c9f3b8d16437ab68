"""Where a screening run reads and writes: a local folder, or an fsspec URL (`s3://…`, `gs://…`,
`abfs://…`) for object storage a whole dask cluster sees.

A location is a string, resolved once by the run before anything is shipped to a worker
(`resolve`): a local path becomes absolute, since a dask worker runs in its own folder, and a URL stays
as given. Credentials for a URL come from its filesystem's usual environment (`AWS_ACCESS_KEY_ID`,
`AWS_ENDPOINT_URL`, `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_NAME`, …) on the client
and on every worker; they never travel with a task. Local paths go through `os` directly (the hot
loops write millions of lines); URLs through fsspec.
"""
from __future__ import annotations

import contextlib
import io
import os
import posixpath
import secrets
import shutil
import tempfile
from typing import IO, Any

from cds.errors import CdsError

# The filesystem library each protocol needs (fsspec names them too; this says how to install it here).
EXTRAS = {"s3": "pip install 'pgx-cds[s3]' (s3fs)", "s3a": "pip install 'pgx-cds[s3]' (s3fs)",
          "gs": "pip install gcsfs", "gcs": "pip install gcsfs",
          "abfs": "pip install adlfs", "az": "pip install adlfs", "abfss": "pip install adlfs"}


def is_url(location: str) -> bool:
    return "://" in location


def resolve(target: str | os.PathLike) -> str:
    """An absolute local path, or the URL as given (without a trailing slash); a URL whose
    filesystem is not installed is a clear error here, before any work starts."""
    text = os.fspath(target)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if not is_url(text):
        return os.path.abspath(os.path.expanduser(text))
    _filesystem(text)
    return text.rstrip("/")


def _filesystem(location: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    protocol = location.split("://", 1)[0]
    try:
        return url_to_fs(location)
    except ImportError as err:
        hint = EXTRAS.get(protocol)
        raise CdsError(f"{location}: the {protocol}:// filesystem is not installed"
                       + (f" ({hint})" if hint else f" ({err})")) from None
    except ValueError as err:
        raise CdsError(f"{location}: {err}") from None


def join(location: str, *names: str) -> str:
    return posixpath.join(location, *names) if is_url(location) else os.path.join(location, *names)


def open_file(location: str, mode: str = "rb") -> IO[Any]:
    if not is_url(location):
        return open(location, mode)
    fs, path = _filesystem(location)
    if mode == "rb":
        # io's reader over it: fsspec's own file objects have no readline(size), which bounds a line
        return io.BufferedReader(fs.open(path, mode), buffer_size=1 << 20)
    return fs.open(path, mode)


def makedirs(location: str) -> None:
    if is_url(location):
        fs, path = _filesystem(location)
        fs.makedirs(path, exist_ok=True)       # a no-op on object stores, which have no folders
    else:
        os.makedirs(location, exist_ok=True)


def is_dir(location: str) -> bool:
    if not is_url(location):
        return os.path.isdir(location)
    fs, path = _filesystem(location)
    return fs.isdir(path)


def size(location: str) -> int:
    if not is_url(location):
        return os.path.getsize(location)
    fs, path = _filesystem(location)
    return int(fs.size(path))


def listdir(location: str) -> list[tuple[str, int]]:
    """(name, size) of each file directly in a folder, by name; empty when there is no such folder."""
    if not is_url(location):
        try:
            entries = list(os.scandir(location))
        except FileNotFoundError:
            return []
        return sorted((e.name, e.stat().st_size) for e in entries if e.is_file())
    fs, path = _filesystem(location)
    fs.invalidate_cache(path)               # another process may have written there since it was listed
    try:
        infos = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted((posixpath.basename(i["name"].rstrip("/")), int(i.get("size") or 0))
                  for i in infos if i.get("type") == "file")


def find(location: str) -> list[tuple[str, int]]:
    """(path relative to the folder, size) of every file under a URL folder, by path."""
    fs, path = _filesystem(location)
    root = path.rstrip("/") + "/"
    fs.invalidate_cache(path)
    found = fs.find(path, withdirs=False, detail=True)
    return sorted((name[len(root):], int(info.get("size") or 0)) for name, info in found.items()
                  if name.startswith(root))


def remove_tree(location: str) -> None:
    if not is_url(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    fs, path = _filesystem(location)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def scratch(parent: str) -> str:
    """A new, private scratch folder under `parent` (on object storage: a new prefix)."""
    if is_url(parent):
        return join(parent, f".screen-{secrets.token_hex(6)}")
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=".screen-", dir=parent)


def write_text(location: str, text: str) -> None:
    with open_file(location, "wb") as f:
        f.write(text.encode("utf-8"))
