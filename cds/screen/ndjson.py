"""Bulk Data NDJSON in, grouped by patient on disk: phase one of a screening run.

Input is a folder of `$export` files (`Patient.ndjson`, `1.Observation.ndjson.gz`, … any subset), local
or at an fsspec URL (`storage`), subfolders included. Each file is cut into chunks (byte ranges ending
at a newline; a gzip file is one chunk), and each chunk is read line by line: the patient a resource
belongs to decides its partition, crc32(patient id) mod P, and the raw line is appended to that
partition's file after the patient's id (JSON-quoted, then a tab), so phase two groups the lines by
patient without parsing them again. Nothing is held in memory beyond one line, and a line longer than
`max_line_bytes` is skipped in pieces without ever being held (a gzip bomb of one 2 GiB line costs the
time to inflate it, not the memory), so phase one is bounded whatever the input; phase two reads one
partition at a time (`partition_files`), which P keeps small.

Lines that are not JSON objects, that name no patient or that are over the limit are reported (file
and line), never dropped silently; so is every file or link in the folder that is not read, and a file
that could not be read to its end. Medication resources belong to no patient: they go to one side file
that every partition reads (a formulary's size, not a cohort's).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from cds.errors import CdsError
from cds.screen import storage

SUFFIXES = (".ndjson", ".ndjson.gz")
CHUNK_BYTES = 32 << 20           # a chunk of a plain file: enough work per task, little to re-read
PARTITION_BYTES = 4 << 20        # target raw bytes per partition (phase two holds one in memory)
GZIP_RATIO = 8                   # estimated uncompressed/compressed size of FHIR NDJSON
MAX_LINE_BYTES = 8 << 20         # default --max-line-bytes: one resource (a report with a PDF inline fits)
MAX_PATIENT_BYTES = 32 << 20     # default --max-patient-bytes: one patient's NDJSON (~50k resources)
REMOTE_BUFFER_BYTES = 16 << 20   # phase one's buffered output per task when the scratch is object storage
SEARCH_BYTES = 1 << 20           # how much of an over-long line is read at a time while skipping it

# Where each resource type names its patient (FHIR R4 Patient compartment, the types we read).
PATIENT_FIELDS = {
    "Observation": "subject", "DiagnosticReport": "subject", "MedicationRequest": "subject",
    "MedicationStatement": "subject", "Consent": "patient",
}


@dataclass(frozen=True)
class InputFile:
    location: str       # what a worker opens: an absolute path or a URL
    name: str           # relative to the input folder, for messages and the digest
    size: int


@dataclass
class Inputs:
    files: list[InputFile]
    not_read: list[tuple[str, str]] = field(default_factory=list)     # (name, why it is not read)


@dataclass(frozen=True)
class Chunk:
    path: str           # absolute path or URL
    name: str           # the file's name relative to the input folder
    start: int          # byte offset of the first line (plain files)
    end: int            # byte offset after the last line; -1 for a whole gzip file
    first_line: int     # 1-based number of the chunk's first line (for messages); 0 when unknown


@dataclass
class ChunkResult:
    name: str = ""
    lines: int = 0
    routed: int = 0                       # lines written to a partition or the medications file
    by_type: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)   # (patient, where, reason)
    over_limit: int = 0                   # lines skipped as longer than max_line_bytes
    lost: str | None = None               # why the chunk could not be read to its end


class Oversized(int):
    """Stands in a line's place for a line over the limit: its length in bytes."""


# --- the input folder ---------------------------------------------------------------------------------
def input_files(folder: str) -> Inputs:
    """Every .ndjson / .ndjson.gz file under `folder` (subfolders included), and what else is there,
    each with why it is not read: another kind of file, a link out of the folder, a special file."""
    found = _remote_files(folder) if storage.is_url(folder) else _local_files(folder)
    if not found.files:
        listed = "; ".join(f"{n}: {why}" for n, why in found.not_read[:5])
        others = f" (found instead: {listed})" if found.not_read else ""
        raise CdsError(f"{folder}: no .ndjson or .ndjson.gz files (a FHIR Bulk Data export folder is expected){others}")
    return found


def _remote_files(folder: str) -> Inputs:
    if not storage.is_dir(folder):
        raise CdsError(f"{folder}: not a folder of Bulk Data NDJSON files")
    found = Inputs([])
    for name, size in storage.find(folder):
        if name.endswith(SUFFIXES):
            found.files.append(InputFile(storage.join(folder, name), name, size))
        else:
            found.not_read.append((name, "not a .ndjson or .ndjson.gz file; not read"))
    return found


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _local_files(folder: str) -> Inputs:
    """Walks the folder; a symbolic link is followed only to a file or folder inside it, never out of
    it, and a file reached under two names is read once, under its own name rather than a link's."""
    if not os.path.isdir(folder):
        raise CdsError(f"{folder}: not a folder of Bulk Data NDJSON files")
    root = os.path.realpath(folder)
    found = Inputs([])
    candidates: dict[str, list[tuple[bool, str]]] = {}      # real path → (reached by a link, name)
    pending = [(root, "", False)]
    visited = {root}
    while pending:
        here, prefix, linked = pending.pop()
        for entry in sorted(os.scandir(here), key=lambda e: e.name):
            name = prefix + entry.name
            real = os.path.realpath(entry.path)
            link = linked or entry.is_symlink()
            if entry.is_symlink() and not _inside(real, root):
                found.not_read.append((name, "a symbolic link out of the input folder; not followed"))
                continue
            try:
                mode = os.stat(real).st_mode
            except OSError as err:
                found.not_read.append((name, f"could not be read ({err.strerror or err}); not read"))
                continue
            if stat.S_ISDIR(mode):
                if real in visited:
                    found.not_read.append((name, "a link to a folder read under another name; read once"))
                else:
                    visited.add(real)
                    pending.append((real, name + "/", link))
            elif not stat.S_ISREG(mode):
                found.not_read.append((name, "not a regular file (a pipe, socket or device); not read"))
            elif not name.endswith(SUFFIXES):
                found.not_read.append((name, "not a .ndjson or .ndjson.gz file; not read"))
            else:
                candidates.setdefault(real, []).append((link, name))
    for real, names in candidates.items():
        (_, chosen), *others = sorted(names)
        found.files.append(InputFile(real, chosen, os.stat(real).st_size))
        found.not_read += [(name, f"the same file as {chosen}; read once") for _, name in others]
    found.files.sort(key=lambda f: f.name)
    found.not_read.sort()
    return found


def input_digest(files: list[InputFile]) -> str:
    """SHA-256 over every file's name and bytes, in name order: which data a run screened."""
    digest = hashlib.sha256()
    for item in files:
        digest.update(item.name.encode() + b"\0")
        with storage.open_file(item.location) as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def _is_gzip(name: str) -> bool:
    return name.endswith(".gz")


def estimated_bytes(files: list[InputFile]) -> int:
    return sum(f.size * (GZIP_RATIO if _is_gzip(f.name) else 1) for f in files)


def partition_count(files: list[InputFile], workers: int) -> int:
    """Enough partitions that each holds about PARTITION_BYTES, and a few per worker for balance."""
    return max(4 * workers, -(-estimated_bytes(files) // PARTITION_BYTES))


def _skip_line(f: IO[bytes]) -> tuple[int, bool]:
    """Reads on to the end of the current line in pieces: the bytes it read, and whether a newline
    ended them (not the end of the file)."""
    skipped = 0
    while True:
        piece = f.readline(SEARCH_BYTES)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped, bool(piece)


def chunks(files: list[InputFile], chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    out: list[Chunk] = []
    for item in files:
        if _is_gzip(item.name):
            out.append(Chunk(item.location, item.name, 0, -1, 1))
            continue
        start, first = 0, 1
        with storage.open_file(item.location) as f:
            while start < item.size:
                end = min(item.size, start + chunk_bytes)
                if end < item.size:
                    f.seek(end)
                    end += _skip_line(f)[0]           # run on to the end of the line
                out.append(Chunk(item.location, item.name, start, end, first if start == 0 else 0))
                start = end
    return out


def chunk_size(chunk: Chunk) -> int:
    """Estimated bytes a chunk reads (a gzip file by its compressed size): for ordering the work."""
    if chunk.end < 0:
        return storage.size(chunk.path) * GZIP_RATIO
    return chunk.end - chunk.start


def _bounded_lines(f: IO[bytes], limit: int, budget: int | None) -> Iterator[bytes | Oversized]:
    """The lines of `f` (up to `budget` bytes), each at most `limit` bytes before its newline; a
    longer one is read past in pieces and yielded as `Oversized(length without its newline)`."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        size = len(line)
        if size > limit and not line.endswith(b"\n"):
            rest, newline = _skip_line(f)
            size += rest
            yield Oversized(size - newline)
        else:
            yield line
        if budget is not None:
            budget -= size
            if budget <= 0:
                return


def _lines(chunk: Chunk, limit: int) -> Iterator[bytes | Oversized]:
    with storage.open_file(chunk.path) as raw:
        if chunk.end < 0:
            with gzip.open(raw, "rb") as f:
                yield from _bounded_lines(f, limit, None)
            return
        raw.seek(chunk.start)
        yield from _bounded_lines(raw, limit, chunk.end - chunk.start)


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to ("123" of "Patient/123"), or None."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    holder = resource.get(PATIENT_FIELDS.get(kind, "subject") if isinstance(kind, str) else "subject")
    ref = holder.get("reference") if isinstance(holder, dict) else None
    if not isinstance(ref, str) or "Patient/" not in ref:
        return None
    pid = ref.rsplit("Patient/", 1)[1].split("/_history/")[0]
    return pid or None


def partition_of(patient: str, partitions: int) -> int:
    # crc32, not hash(): the same patient must land in the same partition in every process.
    return zlib.crc32(patient.encode("utf-8")) % partitions


def _allow_open_files(wanted: int) -> None:
    # A chunk keeps one file open per partition it writes to (about 190 at a million patients).
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


class _ObjectBuffer:
    """Writes to object storage, which cannot append: each file's bytes are gathered, and when the
    task's files together hold more than REMOTE_BUFFER_BYTES, the largest is written out as an object
    of its own (`<task>-<n>.ndjson`), so a task's memory stays bounded however much it reads."""

    def __init__(self, owner: _PartitionWriter, folder: str):
        self.owner, self.folder, self.data, self.parts = owner, folder, bytearray(), 0

    def write(self, data: bytes) -> None:
        self.data += data
        self.owner.buffered += len(data)
        if self.owner.buffered > REMOTE_BUFFER_BYTES:
            self.owner.flush_largest()

    def flush(self) -> None:
        if self.data:
            name = f"{self.owner.task:06d}-{self.parts:04d}.ndjson"
            with storage.open_file(storage.join(self.folder, name), "wb") as f:
                f.write(bytes(self.data))
            self.owner.buffered -= len(self.data)
            self.parts += 1
            self.data = bytearray()

    def close(self) -> None:
        self.flush()


class _PartitionWriter:
    """One phase-one task's output files, one per partition it writes to (and one for Medications)."""

    def __init__(self, work: str, task: int):
        self.work, self.task, self.buffered = work, task, 0
        self.remote = storage.is_url(work)
        self.files: dict[int, Any] = {}

    def output(self, target: int) -> Any:
        out = self.files.get(target)
        if out is None:
            folder = storage.join(self.work, "meds" if target < 0 else f"p{target:05d}")
            if self.remote:
                out = _ObjectBuffer(self, folder)
            else:
                os.makedirs(folder, exist_ok=True)
                # kept open across calls, one file per target; closed by close()
                out = open(os.path.join(folder, f"{self.task:06d}.ndjson"), "wb")  # noqa: SIM115
            self.files[target] = out
        return out

    def flush_largest(self) -> None:
        max(self.files.values(), key=lambda b: len(b.data)).flush()

    def close(self) -> None:
        for out in self.files.values():
            out.close()


def partition_chunk(chunk: Chunk, task: int, work: str, partitions: int,
                    max_line_bytes: int = MAX_LINE_BYTES) -> ChunkResult:
    """Phase one for one chunk: append each line to its patient's partition file in `work`."""
    _allow_open_files(partitions + 64)
    result = ChunkResult(chunk.name)
    writer = _PartitionWriter(work, task)

    def where(n: int) -> str:
        return f"{chunk.name}:{chunk.first_line + n}" if chunk.first_line else f"{chunk.name}@{chunk.start}+{n + 1}"

    try:
        for n, line in enumerate(_lines(chunk, max_line_bytes)):
            if isinstance(line, Oversized):
                result.lines += 1
                result.over_limit += 1
                result.unreadable.append(("", where(n), f"a line of {int(line):,} bytes, over the limit of "
                                          f"{max_line_bytes:,} (--max-line-bytes); not read"))
                continue
            if not line.strip():
                continue
            result.lines += 1
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                result.unreadable.append(("", where(n), f"not JSON ({err.args[0].split(':')[0]})"))
                continue
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                result.unreadable.append(("", where(n), "not a FHIR resource (no resourceType)"))
                continue
            kind = resource["resourceType"]
            result.by_type[kind] = result.by_type.get(kind, 0) + 1
            if kind == "Medication":
                target, key = -1, b""
            else:
                patient = patient_of(resource)
                if patient is None:
                    rid = resource.get("id")
                    result.unreadable.append(("", f"{kind}/{rid}" if isinstance(rid, str) else where(n),
                                              f"{kind} names no patient (Patient/… reference); not screened"))
                    continue
                target = partition_of(patient, partitions)
                # JSON-quoted, the id holds no raw tab or newline, so the first tab ends it.
                key = orjson.dumps(patient) + b"\t"
            writer.output(target).write(key + line if line.endswith(b"\n") else key + line + b"\n")
            result.routed += 1
    except (OSError, EOFError, zlib.error) as err:
        result.lost = f"could not be read to the end ({err})"
        result.unreadable.append(("", chunk.name, f"file {result.lost}; {result.lines:,} lines read before"))
    finally:
        writer.close()
    return result


# --- phase two's side ---------------------------------------------------------------------------------
def partition_files(work: str, partition: int) -> list[tuple[str, int]]:
    """(location, size) of each file phase one wrote for a partition."""
    folder = storage.join(work, f"p{partition:05d}")
    return [(storage.join(folder, name), size) for name, size in storage.listdir(folder)]


def partition_size(work: str, partition: int) -> int:
    return sum(size for _, size in partition_files(work, partition))


def records(files: list[str]) -> Iterator[tuple[bytes, bytes]]:
    """(patient key, raw line) for every line of the files; the key is the patient's id as phase one
    wrote it (JSON-quoted: `patient_id(key)` reads it)."""
    for location in files:
        with storage.open_file(location) as f:
            for record in f:
                key, _, line = record.partition(b"\t")
                yield key, line


@dataclass(frozen=True)
class Part:
    location: str
    size: int
    one_patient: bool       # every record is one patient's: splitting it again cannot help


def split(files: list[str], folder: str, ways: int, key: bytes) -> tuple[list[Part], int]:
    """Spreads the records of `files` over `ways` new files in `folder`, each patient's in one, by a
    keyed hash of the patient (so no input can aim many patients at one part): for a partition too
    large to hold. The parts, and how many records there were."""
    storage.makedirs(folder)
    names = [storage.join(folder, f"{i:03d}.ndjson") for i in range(ways)]
    outputs = [storage.open_file(name, "wb") for name in names]
    sizes = [0] * ways
    firsts: list[bytes | None] = [None] * ways
    mixed = [False] * ways
    count = 0
    try:
        for location in files:
            with storage.open_file(location) as f:
                for record in f:
                    patient = record.partition(b"\t")[0]
                    part = int.from_bytes(hashlib.blake2b(patient, digest_size=8, key=key).digest(), "big") % ways
                    outputs[part].write(record)
                    sizes[part] += len(record)
                    if firsts[part] is None:
                        firsts[part] = patient
                    elif not mixed[part] and patient != firsts[part]:
                        mixed[part] = True
                    count += 1
    finally:
        for out in outputs:
            out.close()
    return [Part(name, size, not mix) for name, size, mix in zip(names, sizes, mixed, strict=True)], count


def patient_id(key: bytes) -> str:
    return orjson.loads(key)


_medications: tuple[str, Medications] | None = None


@dataclass
class Medications:
    by_id: dict[str, dict]
    lines: int
    over_limit: int = 0         # bytes, when they were more than the limit and none were kept


def medications(work: str, limit: int) -> Medications:
    """Every Medication resource of the export, by id (referenced by orders as Medication/<id>); read
    once per process and run (every partition needs them). A formulary is a few MiB: more than `limit`
    bytes of them are not kept at all (every order naming one is then reported as not identified),
    since each worker holds them all."""
    global _medications
    if _medications is not None and _medications[0] == work:
        return _medications[1]
    folder = storage.join(work, "meds")
    found = Medications({}, 0)
    read = 0
    for name, _ in storage.listdir(folder):
        with storage.open_file(storage.join(folder, name)) as f:
            for line in f:
                found.lines += 1
                read += len(line)
                if read > limit:
                    found.by_id.clear()
                    continue
                resource = orjson.loads(line)
                if isinstance(resource.get("id"), str):
                    found.by_id.setdefault(resource["id"], resource)
    if read > limit:
        found.over_limit = read
    _medications = (work, found)
    return found
