"""`cds serve`'s gunicorn worker: gthread whose threads only ever see a whole request and never a client.

gunicorn's sync worker waits up to its 30-s timeout for a client's request line, and its gthread worker
gives each new connection to a thread that waits 5 s for a first byte and, once one came, as long as
the client likes: two idle sockets held a two-worker service for 30 s, and 16 held eight threads for
10 s (issue 24). Here the worker's event loop reads every request without blocking, head and body, as
a buffering proxy would, and only a complete request goes to a thread; what the thread answers is kept
and sent by the event loop as the client takes it. A client that has not sent its
whole request within CDS_CLIENT_TIMEOUT of starting it (of connecting, or of the previous answer on a
kept-alive connection) is answered 408 and closed (closed without an answer if it sent nothing); a body
over CDS_MAX_BODY_BYTES is answered 413 before it is read, a head over MAX_HEAD_BYTES 431; one that has
not taken its whole answer within CDS_CLIENT_TIMEOUT is cut off. An idle or slow client costs a socket
and its buffers, up to gunicorn's worker_connections per worker (fewer when the open-files limit is
lower), never a thread. The answers are the service's own JSON and pages, so holding one whole is cheap.

A closing connection lingers in the event loop (reading and discarding what the client still sends,
at most LINGER_SECONDS) instead of gunicorn's close_graceful, which waits up to 2 s in the loop itself.
"""
from __future__ import annotations

import contextlib
import errno
import resource
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import orjson
from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

from cds.service.config import env_float, env_int
from cds.service.framing import CRLF, Outcome, RequestFraming

CLIENT_TIMEOUT_ENV = "CDS_CLIENT_TIMEOUT"
DEFAULT_CLIENT_TIMEOUT = 10.0
DEFAULT_MAX_BODY = 10 * 1024 * 1024      # as cds.service.config.Settings.max_body_bytes
MAX_HEAD_BYTES = 256 * 1024              # above the 64 KiB Authorization header the app answers itself
LINGER_SECONDS = 2.0
RESERVED_FILES = 64                      # descriptors kept for the database, journal, logs
READ_SIZE = 256 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(eq=False)
class _Reading:
    """A connection whose next request is arriving."""

    conn: BufferedConn
    deadline: float
    framing: RequestFraming
    buffer: bytearray = field(default_factory=bytearray)
    continued: bool = False              # we sent 100 Continue (and strip Expect before gunicorn sees it)


@dataclass(eq=False)
class _Writing:
    """A connection whose answer is being sent; gunicorn's finish_request runs once it is."""

    conn: BufferedConn
    deadline: float
    data: memoryview
    finish: Callable[[], object]         # the call that completes the request (keep-alive or close)


@dataclass(eq=False)
class _Lingering:
    sock: socket.socket
    deadline: float


class AnswerBuffer:
    """The socket a thread answers through: it keeps what is written, for the event loop to send. Reads
    and closes come from gunicorn's error paths, after which the connection is closed anyway."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = bytearray()

    def sendall(self, data) -> None:
        self.data += data

    def send(self, data) -> int:
        self.data += data
        return len(data)

    def recv(self, _size: int) -> bytes:
        return b""

    def setblocking(self, _flag: bool) -> None:
        pass

    def settimeout(self, _value) -> None:
        pass

    def shutdown(self, _how: int) -> None:
        pass

    def close(self) -> None:
        pass

    def sendfile(self, *_args, **_kwargs):
        raise NotImplementedError("answers are buffered; cds serve sets sendfile off")

    def __getattr__(self, name: str):
        return getattr(self.sock, name)  # fileno, getsockname, family: the real socket's


class BufferedConn(TConn):
    """gunicorn's connection, closed through the worker's event loop rather than by waiting in it."""

    def __init__(self, cfg, sock, client, server, linger):
        super().__init__(cfg, sock, client, server)
        self.request_ready = False       # the whole request is in parser.unreader: a thread may take it
        self._linger = linger

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self._linger(self.sock)
        else:
            super().close()


class BufferedThreadWorker(ThreadWorker):
    worker_connections: int                  # gunicorn's, from --worker-connections (gunicorn ships no types)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.client_timeout = env_float(CLIENT_TIMEOUT_ENV, DEFAULT_CLIENT_TIMEOUT)
        self.max_body = env_int("CDS_MAX_BODY_BYTES", DEFAULT_MAX_BODY)
        # A worker out of file descriptors would fail in accept(): stay below the limit instead.
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft_limit != resource.RLIM_INFINITY:
            self.worker_connections = max(1, min(self.worker_connections, soft_limit - RESERVED_FILES))
        self.reading: deque[_Reading] = deque()
        self.writing: deque[_Writing] = deque()
        self.lingering: deque[_Lingering] = deque()

    # --- connections in -------------------------------------------------------------------------------

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as err:
            if err.errno in (errno.EMFILE, errno.ENFILE):
                self.log.warning("out of file descriptors; new connections wait (raise the open-files limit)")
            elif err.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(BufferedConn(self.cfg, client_sock, client_addr, listener.getsockname(), self._linger))

    def enqueue_req(self, conn):
        """gunicorn calls this for a new connection, a kept-alive one that became readable, and one whose
        next request was read ahead: a thread gets it only once its request is complete."""
        if self.cfg.is_ssl or conn.request_ready:
            conn.request_ready = False
            super().enqueue_req(conn)
            return
        read_ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        reading = _Reading(conn, time.monotonic() + self.client_timeout,
                           RequestFraming(max_head=MAX_HEAD_BYTES, max_body=self.max_body), bytearray(read_ahead))
        conn.sock.setblocking(False)
        if read_ahead and self._advance(reading):
            return
        self.reading.append(reading)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, reading))

    def _on_readable(self, reading: _Reading, sock: socket.socket) -> None:
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:                     # the client went away before finishing its request
            self._stop_reading(reading)
            self._close(reading.conn)
            return
        reading.buffer += data
        self._advance(reading, registered=True)

    def _advance(self, reading: _Reading, registered: bool = False) -> bool:
        """Act on what has arrived; True when the connection left the reading state."""
        outcome = reading.framing.feed(reading.buffer)
        if outcome is Outcome.INCOMPLETE:
            if reading.framing.expects_continue and not reading.continued:
                reading.continued = True
                _send_quietly(reading.conn.sock, CONTINUE)
            return False
        if registered:
            self._stop_reading(reading)
        if outcome is Outcome.COMPLETE:
            self._hand_to_thread(reading)
        elif outcome is Outcome.BODY_TOO_LARGE:
            self._refuse(reading.conn, 413, "Payload Too Large", "payload_too_large",
                         f"the request body is larger than this service accepts ({self.max_body} bytes, "
                         "CDS_MAX_BODY_BYTES)")
        else:
            self._refuse(reading.conn, 431, "Request Header Fields Too Large", "request_header_fields_too_large",
                         f"the request head is larger than this service accepts ({MAX_HEAD_BYTES} bytes)")
        return True

    def _stop_reading(self, reading: _Reading) -> None:
        self.reading.remove(reading)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(reading.conn.sock)

    def _hand_to_thread(self, reading: _Reading) -> None:
        conn = reading.conn
        data = bytes(reading.buffer)
        if reading.continued:
            data = _without_expect(data, reading.framing.head_end)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.initialized = True      # HTTP/1.1 on a plain socket: gunicorn's init() has nothing left to do
        conn.data_ready = True
        conn.parser.unreader.unread(data)   # the parser reads the real socket, and finds it all here
        conn.request_ready = True
        conn.sock = AnswerBuffer(conn.sock)
        self.enqueue_req(conn)

    # --- answers out ----------------------------------------------------------------------------------

    def finish_request(self, conn, fs):
        """The thread is done: send its answer as the client takes it, then let gunicorn keep the
        connection alive or close it."""
        answer = conn.sock
        if not isinstance(answer, AnswerBuffer):
            super().finish_request(conn, fs)
            return
        conn.sock = answer.sock
        finish = partial(super().finish_request, conn, fs)
        writing = _Writing(conn, time.monotonic() + self.client_timeout, memoryview(bytes(answer.data)), finish)
        if self._send_some(writing):
            finish()
            return
        self.writing.append(writing)
        self.poller.register(conn.sock, selectors.EVENT_WRITE, partial(self._on_writable, writing))

    def _send_some(self, writing: _Writing) -> bool:
        """Send what the socket takes now; True when all of it is sent (or the client is gone)."""
        try:
            while writing.data:
                writing.data = writing.data[writing.conn.sock.send(writing.data):]
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            writing.data = writing.data[:0]   # the client went away; gunicorn's finish closes it
        return True

    def _on_writable(self, writing: _Writing, _sock: socket.socket) -> None:
        if not self._send_some(writing):
            return
        self._stop_writing(writing)
        writing.finish()

    def _stop_writing(self, writing: _Writing) -> None:
        self.writing.remove(writing)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(writing.conn.sock)

    # --- clients that take too long -------------------------------------------------------------------

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0].deadline <= now:
            reading = self.reading[0]
            self._stop_reading(reading)
            if not reading.buffer:       # an idle connection: nothing to answer
                self._close(reading.conn)
                continue
            self._refuse(reading.conn, 408, "Request Timeout", "request_timeout",
                         f"the request did not arrive within {self.client_timeout:g} s ({CLIENT_TIMEOUT_ENV})")
        while self.writing and self.writing[0].deadline <= now:
            writing = self.writing[0]
            self._stop_writing(writing)
            self.log.info("%s did not take its answer within %g s (%s); closed", _client(writing.conn),
                          self.client_timeout, CLIENT_TIMEOUT_ENV)
            self.nr_conns -= 1
            writing.conn.close()
        while self.lingering and self.lingering[0].deadline <= now:
            self._end_linger(self.lingering[0])

    def _refuse(self, conn: BufferedConn, status: int, reason: str, error: str, message: str) -> None:
        body = orjson.dumps({"error": error, "message": message})
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        _send_quietly(conn.sock, head + body)
        self.log.info("%s %s: %s", _client(conn), status, message)
        self._close(conn)

    def _close(self, conn: BufferedConn) -> None:
        self.nr_conns -= 1
        self._linger(conn.sock)

    # --- closing without waiting in the event loop ----------------------------------------------------

    def _linger(self, sock: socket.socket) -> None:
        """Half-close and keep reading what the client still sends, so that closing with unread bytes does
        not reset the connection before the client has read our answer (RFC 9112 §9.6)."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close_quietly(sock)
            return
        lingering = _Lingering(sock, time.monotonic() + LINGER_SECONDS)
        self.lingering.append(lingering)
        self.poller.register(sock, selectors.EVENT_READ, partial(self._on_lingering_readable, lingering))

    def _on_lingering_readable(self, lingering: _Lingering, sock: socket.socket) -> None:
        try:
            if sock.recv(READ_SIZE):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end_linger(lingering)

    def _end_linger(self, lingering: _Lingering) -> None:
        self.lingering.remove(lingering)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(lingering.sock)
        _close_quietly(lingering.sock)

    def run(self):
        try:
            super().run()
        finally:
            for reading in list(self.reading):
                _close_quietly(reading.conn.sock)
            for writing in list(self.writing):
                _close_quietly(writing.conn.sock)
            for lingering in list(self.lingering):
                _close_quietly(lingering.sock)


def _without_expect(data: bytes, head_end: int) -> bytes:
    """The request without its Expect field: we already answered it with 100 Continue, and gunicorn would
    send a second one."""
    head, body = data[:head_end], data[head_end:]
    lines = [line for line in head.split(CRLF) if not line.lower().startswith(b"expect:")]
    return CRLF.join(lines) + body


def _client(conn: TConn) -> str:
    return str(conn.client[0]) if conn.client else "-"


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """A short answer on a non-blocking socket; a client that cannot take it loses it."""
    with contextlib.suppress(OSError):
        sock.send(data)


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
