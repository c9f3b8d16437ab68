"""Keyed pseudonyms for patient ids: the only form in which a patient id is stored or logged.

HMAC-SHA256 with a site secret, so the same patient links across calls (audit, override patterns)
while nobody without the key can test a guessed id against the table. The secret comes from
$CDS_AUDIT_KEY; a development install without it gets a random key generated once and kept in
./var/audit-key (mode 0600). Every replica writing one database must share the same key.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from cds.errors import CdsError
from cds.patient_ids import normalised_patient_id

log = logging.getLogger(__name__)

KEY_ENV = "CDS_AUDIT_KEY"
KEY_FILE_ENV = "CDS_AUDIT_KEY_FILE"
DEFAULT_KEY_FILE = Path("var") / "audit-key"
MIN_KEY_CHARS = 32  # 128 bits as hex; shorter secrets are guessable


class PatientHasher:
    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_CHARS:
            raise CdsError(f"the audit key must be at least {MIN_KEY_CHARS} characters")
        self._key = key

    def __call__(self, patient_id: str) -> str:
        return hmac.new(self._key, normalised_patient_id(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()


def load_audit_key(explicit: bytes | str | None = None, key_file: Path | None = None) -> bytes:
    """The site secret: `explicit` (CDS_AUDIT_KEY, passed by a face), else the development key in
    `key_file` (CDS_AUDIT_KEY_FILE; default ./var/audit-key), made on first use."""
    if explicit is not None:
        key = explicit.encode("utf-8") if isinstance(explicit, str) else explicit
        if len(key) < MIN_KEY_CHARS:
            raise CdsError(f"{KEY_ENV} must be at least {MIN_KEY_CHARS} characters of secret")
        return key
    return _development_key(Path(key_file or DEFAULT_KEY_FILE))


def _development_key(path: Path) -> bytes:
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a complete key to a private temporary file, then link it into place: the link either
    # creates the key file whole or fails because another process won the race.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    log.warning("%s not set: generated a development audit key in %s (set %s in production; "
                "every replica must share it)", KEY_ENV, path, KEY_ENV)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_text(encoding="utf-8").strip().encode("utf-8")
    if len(key) < MIN_KEY_CHARS:  # a racing creator has not finished writing it yet, or it was truncated
        raise CdsError(f"audit key file {path} is shorter than {MIN_KEY_CHARS} characters")
    return key
