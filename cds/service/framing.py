"""Where an HTTP/1.1 request ends in the bytes received so far (RFC 9112 §6), without a thread waiting.

`cds serve`'s worker (cds.service.worker) reads requests in its event loop and gives a request to a
thread only once it is complete; this tells it whether it is. It decides framing only: a request
whose framing it cannot read (two lengths, an unknown transfer coding, a malformed chunk) is handed
on as complete, so that gunicorn's parser answers it with its own 400 or 501.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

HEAD_END = b"\r\n\r\n"
CRLF = b"\r\n"
MAX_CHUNK_LINE = 4096          # a chunk-size line with its extensions; longer is malformed


class Outcome(enum.Enum):
    INCOMPLETE = "incomplete"          # wait for more bytes
    COMPLETE = "complete"              # `end` bytes hold the whole request
    HEAD_TOO_LARGE = "head too large"  # no end of head within max_head bytes
    BODY_TOO_LARGE = "body too large"  # the body is (or says it will be) over max_body bytes


@dataclass
class RequestFraming:
    """The framing of one request, fed the growing buffer again after every read (resumable)."""

    max_head: int
    max_body: int
    head_end: int = -1                 # index just past the blank line, once seen
    content_length: int | None = None
    chunked: bool = False
    expects_continue: bool = False
    end: int = -1                      # index just past the request, once complete
    _scan_from: int = 0                # where to look for the head's end / the next chunk
    _chunked_body: int = 0

    def feed(self, buffer: bytes | bytearray) -> Outcome:
        if self.head_end < 0:
            outcome = self._find_head(buffer)
            if outcome is not None:
                return outcome
        if self.chunked:
            return self._chunks(buffer)
        if self.content_length is not None and len(buffer) < self.head_end + self.content_length:
            return Outcome.INCOMPLETE
        self.end = self.head_end + (self.content_length or 0)
        return Outcome.COMPLETE

    def _find_head(self, buffer: bytes | bytearray) -> Outcome | None:
        at = buffer.find(HEAD_END, self._scan_from)
        if at < 0:
            if len(buffer) > self.max_head:
                return Outcome.HEAD_TOO_LARGE
            self._scan_from = max(0, len(buffer) - len(HEAD_END) + 1)
            return Outcome.INCOMPLETE
        self.head_end = at + len(HEAD_END)
        if self.head_end > self.max_head:
            return Outcome.HEAD_TOO_LARGE
        if not self._read_head(bytes(buffer[:at])):
            self.end = self.head_end      # framing gunicorn will refuse: hand it the head now
            return Outcome.COMPLETE
        if self.content_length is not None and self.content_length > self.max_body:
            return Outcome.BODY_TOO_LARGE
        self._scan_from = self.head_end
        return None

    def _read_head(self, head: bytes) -> bool:
        """Read the framing fields; False when they make the framing unreadable."""
        lengths, codings = [], []
        version = head.split(CRLF, 1)[0].rsplit(b" ", 1)[-1]
        for line in head.split(CRLF)[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                continue
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif name == b"expect" and value.lower() == b"100-continue" and version == b"HTTP/1.1":
                self.expects_continue = True
        if codings:
            if lengths or codings[-1] != b"chunked":
                return False
            self.chunked = True
            return True
        if not lengths:
            return True
        if len(set(lengths)) != 1 or not lengths[0].isdigit():
            return False
        self.content_length = int(lengths[0])
        return True

    def _chunks(self, buffer: bytes | bytearray) -> Outcome:
        while True:
            line_end = buffer.find(CRLF, self._scan_from)
            if line_end < 0:
                if len(buffer) - self._scan_from > MAX_CHUNK_LINE:
                    return self._hand_on(len(buffer))
                return Outcome.INCOMPLETE
            size_text = bytes(buffer[self._scan_from:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return self._hand_on(len(buffer))
            if size == 0:
                return self._trailers(buffer, line_end + len(CRLF))
            self._chunked_body += size
            if self._chunked_body > self.max_body:
                return Outcome.BODY_TOO_LARGE
            next_chunk = line_end + len(CRLF) + size + len(CRLF)
            if len(buffer) < next_chunk:
                return Outcome.INCOMPLETE
            self._scan_from = next_chunk

    def _trailers(self, buffer: bytes | bytearray, start: int) -> Outcome:
        if buffer[start:start + len(CRLF)] == CRLF:
            self.end = start + len(CRLF)
            return Outcome.COMPLETE
        at = buffer.find(HEAD_END, start)
        if at < 0:
            return self._hand_on(len(buffer)) if len(buffer) - start > self.max_head else Outcome.INCOMPLETE
        self.end = at + len(HEAD_END)
        return Outcome.COMPLETE

    def _hand_on(self, end: int) -> Outcome:
        self.end = end
        return Outcome.COMPLETE
