"""Bulk Data NDJSON in, grouped by patient on disk: phase one of a screening run.

Input is a folder of `$export` files (`Patient.ndjson`, `1.Observation.ndjson.gz`, … any subset).
Each file is cut into chunks (byte ranges ending at a newline; a gzip file is one chunk), and each
chunk is read line by line: the patient a resource belongs to decides its partition,
crc32(patient id) mod P, and the raw line is appended to that partition's file after the patient's
id (JSON-quoted, then a tab), so phase two groups the lines by patient without parsing them again.
Nothing is held in memory beyond one line, so phase one is bounded whatever the input size; phase
two then reads one partition at a time (`partition_records`), which P keeps small.

Lines that are not JSON objects, or that name no patient, are reported (file and line), never
dropped silently. Medication resources belong to no patient: they go to one side file that every
partition reads (a formulary's size, not a cohort's).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson

from cds.errors import CdsError

SUFFIXES = (".ndjson", ".ndjson.gz")
CHUNK_BYTES = 32 << 20           # a chunk of a plain file: enough work per task, little to re-read
PARTITION_BYTES = 4 << 20        # target raw bytes per partition (phase two holds one in memory)
GZIP_RATIO = 8                   # estimated uncompressed/compressed size of FHIR NDJSON
MEDICATIONS = "medications.ndjson"

# Where each resource type names its patient (FHIR R4 Patient compartment, the types we read).
PATIENT_FIELDS = {
    "Observation": "subject", "DiagnosticReport": "subject", "MedicationRequest": "subject",
    "MedicationStatement": "subject", "Consent": "patient",
}


@dataclass(frozen=True)
class Chunk:
    path: str
    start: int          # byte offset of the first line (plain files)
    end: int            # byte offset after the last line; -1 for a whole gzip file
    first_line: int     # 1-based number of the chunk's first line (for messages); 0 when unknown


@dataclass
class ChunkResult:
    lines: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)   # (patient, where, reason)


def input_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CdsError(f"{folder}: not a folder of Bulk Data NDJSON files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    if not files:
        raise CdsError(f"{folder}: no .ndjson or .ndjson.gz files (a FHIR Bulk Data export folder is expected)")
    return files


def input_digest(files: list[Path]) -> str:
    """SHA-256 over every file's name and bytes, in name order: which data a run screened."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def estimated_bytes(files: list[Path]) -> int:
    return sum(p.stat().st_size * (GZIP_RATIO if p.name.endswith(".gz") else 1) for p in files)


def partition_count(files: list[Path], workers: int) -> int:
    """Enough partitions that each holds about PARTITION_BYTES, and a few per worker for balance."""
    return max(4 * workers, -(-estimated_bytes(files) // PARTITION_BYTES))


def chunks(files: list[Path], chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    out: list[Chunk] = []
    for path in files:
        if path.name.endswith(".gz"):
            out.append(Chunk(str(path), 0, -1, 1))
            continue
        size = path.stat().st_size
        start, first = 0, 1
        with open(path, "rb") as f:
            while start < size:
                end = min(size, start + chunk_bytes)
                if end < size:
                    f.seek(end)
                    f.readline()                      # run on to the end of the line
                    end = f.tell()
                out.append(Chunk(str(path), start, end, first if start == 0 else 0))
                start = end
    return out


def chunk_size(chunk: Chunk) -> int:
    """Estimated bytes a chunk reads (a gzip file by its compressed size): for ordering the work."""
    if chunk.end < 0:
        return os.path.getsize(chunk.path) * GZIP_RATIO
    return chunk.end - chunk.start


def partition_size(work: str, partition: int) -> int:
    folder = os.path.join(work, f"p{partition:05d}")
    if not os.path.isdir(folder):
        return 0
    return sum(entry.stat().st_size for entry in os.scandir(folder))


def _lines(chunk: Chunk) -> Iterator[bytes]:
    if chunk.end < 0:
        with gzip.open(chunk.path, "rb") as f:
            yield from f
        return
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        remaining = chunk.end - chunk.start
        for line in f:
            yield line
            remaining -= len(line)
            if remaining <= 0:
                break


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to ("123" of "Patient/123"), or None."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    holder = resource.get(PATIENT_FIELDS.get(kind, "subject"))
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


def partition_chunk(chunk: Chunk, task: int, work: str, partitions: int) -> ChunkResult:
    """Phase one for one chunk: append each line to its patient's partition file in `work`."""
    _allow_open_files(partitions + 64)
    result = ChunkResult()
    outputs: dict[int, Any] = {}
    name = os.path.basename(chunk.path)
    try:
        def where(n: int) -> str:
            return f"{name}:{chunk.first_line + n}" if chunk.first_line else f"{name}@{chunk.start}+{n + 1}"

        for n, line in enumerate(_lines(chunk)):
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
            out = outputs.get(target)
            if out is None:
                folder = os.path.join(work, "meds" if target < 0 else f"p{target:05d}")
                os.makedirs(folder, exist_ok=True)
                out = outputs[target] = open(os.path.join(folder, f"{task:06d}.ndjson"), "wb")
            out.write(key + line if line.endswith(b"\n") else key + line + b"\n")
    except (OSError, EOFError, zlib.error) as err:
        result.unreadable.append(("", name, f"file could not be read to the end ({err})"))
    finally:
        for out in outputs.values():
            out.close()
    return result


def partition_records(work: str, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """(patient key, raw line) for every line of one partition; the key is the patient's id as
    phase one wrote it (JSON-quoted: `patient_id(key)` reads it)."""
    folder = os.path.join(work, f"p{partition:05d}")
    if not os.path.isdir(folder):
        return
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            for record in f:
                key, _, line = record.partition(b"\t")
                yield key, line


def patient_id(key: bytes) -> str:
    return orjson.loads(key)


def medications(work: str) -> dict[str, dict]:
    """Every Medication resource of the export, by id (referenced by orders as Medication/<id>)."""
    folder = os.path.join(work, "meds")
    found: dict[str, dict] = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                for line in f:
                    resource = orjson.loads(line)
                    if isinstance(resource.get("id"), str):
                        found.setdefault(resource["id"], resource)
    return found
