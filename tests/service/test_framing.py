"""Where a request ends in the bytes received so far (cds.service.framing), fed a byte at a time as a
slow client sends them, and the framings it hands on for gunicorn's parser to refuse."""
from __future__ import annotations

import pytest

from cds.service.framing import Outcome, RequestFraming

HEAD = b"POST /cds-services/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"


def fed_bytewise(data: bytes, max_body: int = 1000) -> tuple[list[Outcome], RequestFraming]:
    framing = RequestFraming(max_head=4096, max_body=max_body)
    outcomes = [framing.feed(data[:n]) for n in range(1, len(data) + 1)]
    return outcomes, framing


def test_a_content_length_body_completes_at_its_last_byte():
    request = HEAD + b"Content-Length: 5\r\n\r\nhello"
    outcomes, framing = fed_bytewise(request + b"GET / HTTP/1.1\r\n")
    assert outcomes.index(Outcome.COMPLETE) == len(request) - 1
    assert framing.end == len(request)


def test_a_request_without_body_completes_at_the_blank_line():
    request = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    outcomes, _ = fed_bytewise(request)
    assert outcomes[-1] is Outcome.COMPLETE and Outcome.COMPLETE not in outcomes[:-1]


def test_a_chunked_body_completes_after_its_last_chunk_and_trailers():
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body
    outcomes, framing = fed_bytewise(request)
    assert outcomes[-1] is Outcome.COMPLETE and Outcome.COMPLETE not in outcomes[:-1]
    assert framing.end == len(request)


def test_bodies_over_the_limit_are_known_as_soon_as_announced():
    assert fed_bytewise(HEAD + b"Content-Length: 1001\r\n\r\n", max_body=1000)[0][-1] is Outcome.BODY_TOO_LARGE
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n3e9\r\n"
    assert fed_bytewise(chunked, max_body=1000)[0][-1] is Outcome.BODY_TOO_LARGE


def test_a_head_without_end_is_too_large_past_the_limit():
    framing = RequestFraming(max_head=100, max_body=10)
    assert framing.feed(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 10) is Outcome.INCOMPLETE
    assert framing.feed(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 20) is Outcome.HEAD_TOO_LARGE


def test_expect_100_continue_is_noticed_on_http_1_1_only():
    framing = RequestFraming(max_head=4096, max_body=100)
    assert framing.feed(HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n") is Outcome.INCOMPLETE
    assert framing.expects_continue
    old = RequestFraming(max_head=4096, max_body=100)
    old.feed(HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert not old.expects_continue


@pytest.mark.parametrize("fields", [
    b"Content-Length: 5\r\nContent-Length: 6\r\n",           # two lengths
    b"Content-Length: -5\r\n",                               # not a length
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",  # both framings (request smuggling)
    b"Transfer-Encoding: gzip\r\n",                          # no chunked last
])
def test_framing_gunicorn_refuses_is_handed_on_at_the_end_of_the_head(fields):
    framing = RequestFraming(max_head=4096, max_body=100)
    request = HEAD + fields + b"\r\n"
    assert framing.feed(request + b"hello") is Outcome.COMPLETE
    assert framing.end == len(request)


def test_a_malformed_chunk_size_is_handed_on():
    framing = RequestFraming(max_head=4096, max_body=100)
    assert framing.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n") is Outcome.COMPLETE
