"""Random (version 4) UUIDs for cards and suggestions, drawn from the OS's CSPRNG in blocks.

A response carries about ten UUIDs; one getrandom() call per UUID was a measurable share of a
request's CPU, so each thread takes 4 KiB at a time and slices it.
"""
from __future__ import annotations

import os
import threading
import uuid

_BLOCK = 16 * 256
_local = threading.local()


def new_uuid() -> str:
    buffer = getattr(_local, "buffer", b"")
    offset = getattr(_local, "offset", _BLOCK)
    if offset >= len(buffer) or getattr(_local, "pid", None) != os.getpid():  # refill, and never share across fork
        buffer, offset = os.urandom(_BLOCK), 0
        _local.buffer, _local.pid = buffer, os.getpid()
    _local.offset = offset + 16
    return str(uuid.UUID(bytes=buffer[offset:offset + 16], version=4))
