"""The HTTP edge: parsing and limits (pure), and one Edge in a thread answering real sockets."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time

import pytest

from modelarts_mnist.errors import MalformedHttp, PayloadTooLarge, Unauthorized
from modelarts_mnist.server import connection
from modelarts_mnist.server.connection import (CHUNK_COUNT_LIMIT, FIELD_COUNT_LIMIT, HEAD_LIMIT, REQUEST_LINE_LIMIT, BodyReader,
                                               EdgeLimits, body_framing, header_line, make_environ, parse_head,
                                               render_answer, render_error)
from modelarts_mnist.server.edge import AppThreads, Edge

ADDRESS = ("127.0.0.1", 80)


def head_of(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("latin-1")


# ---------------------------------------------------------------- parsing


def test_parse_head_reads_the_request_and_its_fields():
    method, target, version, fields = parse_head(head_of("POST /a%20b?x=1 HTTP/1.1\nHost: h\nX-A:  v \nx-a: w"))
    environ = make_environ(method, target, version, fields, ADDRESS, ("10.0.0.1", 5))
    assert (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"]) == ("POST", "/a b", "x=1")
    assert environ["HTTP_X_A"] == "v,w" and environ["HTTP_HOST"] == "h" and environ["REMOTE_ADDR"] == "10.0.0.1"


@pytest.mark.parametrize("head, status", [
    ("GET / HTTP/1.1\nHost x", 400),
    ("GET / HTTP/1.1\n Host: folded", 400),
    ("GET / HTTP/1.1\nHo st: x", 400),
    ("GET / HTTP/1.1\nX: a\x01b", 400),
    ("GET  / HTTP/1.1", 400),
    ("GET / HTTP/1.1 extra", 400),
    ("GET / FTP/1.1", 400),
    ("GET / HTTP/2.0", 505),
    ("G\x00T / HTTP/1.1", 400),
    ("GET " + "/a" * REQUEST_LINE_LIMIT + " HTTP/1.1", 414),
    ("GET / HTTP/1.1\n" + "X-A: b\n" * FIELD_COUNT_LIMIT + "X-B: c", 431),
    ("GET / HTTP/1.1\nX-Big: " + "a" * 9000, 431),
], ids=["no-colon", "folded", "space-in-name", "control-char", "double-space", "four-parts", "not-http",
        "http2", "nul-method", "long-uri", "many-fields", "long-field"])
def test_malformed_heads_are_refused_with_their_status(head, status):
    with pytest.raises(MalformedHttp) as refused:
        method, target, version, fields = parse_head(head_of(head))
        make_environ(method, target, version, fields, ADDRESS, ADDRESS)
    assert refused.value.http_status == status


@pytest.mark.parametrize("headers", [["Host: a", "Host: b"], ["Content-Length: 1", "Content-Length: 2"],
                                     ["X-Auth-Token: a", "X-Auth-Token: b"]])
def test_fields_that_must_be_single_are_refused_when_repeated(headers):
    with pytest.raises(MalformedHttp, match="more than once"):
        make_environ(*parse_head(head_of("GET / HTTP/1.1\n" + "\n".join(headers))), ADDRESS, ADDRESS)


def test_underscored_fields_cannot_pose_as_dashed_ones():
    environ = make_environ(*parse_head(head_of("GET / HTTP/1.1\nX_Auth_Token: t")), ADDRESS, ADDRESS)
    assert "HTTP_X_AUTH_TOKEN" not in environ


def test_absolute_form_targets_give_their_path():
    environ = make_environ(*parse_head(head_of("GET http://h:1/p?q=1 HTTP/1.1")), ADDRESS, ADDRESS)
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/p", "q=1")


@pytest.mark.parametrize("fields, status", [
    ({"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "3"}, 400),
    ({"HTTP_TRANSFER_ENCODING": "gzip, chunked"}, 501),
    ({"HTTP_TRANSFER_ENCODING": "identity"}, 501),
    ({"CONTENT_LENGTH": "-1"}, 400),
    ({"CONTENT_LENGTH": "1e3"}, 400),
    ({"CONTENT_LENGTH": "١٢"}, 400),  # Arabic-Indic digits: isdigit() but not a length
])
def test_body_framing_refuses_what_could_smuggle_or_is_unsupported(fields, status):
    with pytest.raises(MalformedHttp) as refused:
        body_framing({"SERVER_PROTOCOL": "HTTP/1.1", **fields})
    assert refused.value.http_status == status


def test_chunked_bodies_decode_across_any_split():
    raw = b"3;ext=1\r\nabc\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nTrailer: t\r\n\r\nNEXT"
    for split in range(1, len(raw)):
        reader, buffer, body = BodyReader(True, 0, 100), bytearray(), None
        for piece in (raw[:split], raw[split:]):
            buffer += piece
            body = body or reader.take(buffer)
        assert body == b"abc" + b"x" * 16 and buffer == b"NEXT"


@pytest.mark.parametrize("raw", [b"zz\r\n", b"3\r\nabcX\r\n", b"-1\r\n", b"\r\n", b"1" * 2000])
def test_malformed_chunks_are_400(raw):
    with pytest.raises(MalformedHttp) as refused:
        BodyReader(True, 0, 100).take(bytearray(raw))
    assert refused.value.http_status == 400


def test_chunks_past_the_limit_are_413_before_they_arrive():
    with pytest.raises(PayloadTooLarge):
        BodyReader(True, 0, 100).take(bytearray(b"65\r\n"))  # announces 101 bytes


def test_tiny_chunks_count_their_framing_and_their_number():
    with pytest.raises(PayloadTooLarge):  # 30 data bytes, but 150 on the wire
        BodyReader(True, 0, 100).take(bytearray(b"1\r\nx\r\n" * 30))
    many = bytearray(b"1\r\nx\r\n" * (CHUNK_COUNT_LIMIT + 1))
    with pytest.raises(MalformedHttp, match="chunks"):
        BodyReader(True, 0, 10 * len(many)).take(many)


def test_render_error_is_the_apps_json_shape_with_a_safe_detail():
    raw = render_error(Unauthorized("bad\x00token\r\nX-Injected: 1"), keep_alive=False)
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ") and b"Connection: close" in head and b"\r\nX-Injected" not in head
    assert json.loads(body) == {"error_code": "APIG.0301", "error_msg": "bad\x00token\r\nX-Injected: 1"}


def test_render_answer_refuses_header_injection():
    for _ in range(2):  # a refused line is never kept
        with pytest.raises(ValueError):
            render_answer("200 OK", [("X-A", "a\r\nSet-Cookie: x")], b"", True)


def test_header_lines_kept_stay_bounded_and_are_the_ones_written():
    for index in range(connection.HEADER_LINES_KEPT * 3):
        assert header_line("X-Error-Detail", f"error {index}") == f"X-Error-Detail: error {index}\r\n"
    assert len(connection._header_lines) <= connection.HEADER_LINES_KEPT


# ---------------------------------------------------------------- a live edge


class App:
    """A WSGI app with the admission hook: /sleep?s sleeps, anything else echoes the body's length."""

    def __init__(self, limit=1000, token=None):
        self.limit, self.token, self.calls = limit, token, 0

    def admit(self, environ):
        if self.token and environ.get("HTTP_X_AUTH_TOKEN") != self.token:
            raise Unauthorized("missing or wrong X-Auth-Token")
        return self.limit

    def __call__(self, environ, start_response):
        self.calls += 1
        if environ["PATH_INFO"] == "/sleep":
            time.sleep(float(environ["QUERY_STRING"]))
        body = environ["wsgi.input"].read()
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [b"x" * (1 << 20)]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"length": len(body), "body": body[:20].decode("latin-1")}).encode()]


class LiveEdge:
    """An Edge on a free loopback port, its loop in a daemon thread."""

    def __init__(self, app, limits):
        self.app, self.overruns = app, []
        self.edge = Edge(app, limits, AppThreads(2), on_overrun=lambda: self.overruns.append(1))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def main():
            self.stop = asyncio.Event()
            await self.edge.start([self.listener])
            started.set()
            await self.stop.wait()
            await self.edge.drain(0)

        threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True).start()
        started.wait(5)

    def connect(self, timeout=5) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def exchange(self, data: bytes, timeout=5) -> bytes:
        """Send data, read until the server closes."""
        with self.connect(timeout) as sock:
            sock.sendall(data)
            return read_all(sock)


def read_all(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture()
def live():
    made = []

    def make(app=None, **limits):
        made.append(LiveEdge(app or App(), EdgeLimits(**{"app_seconds": 5, **limits})))
        return made[-1]

    yield make
    for server in made:
        server.loop.call_soon_threadsafe(server.stop.set)


def test_keep_alive_and_pipelined_requests_are_answered_in_order(live):
    server = live()
    two = (b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 3\r\n\r\nabc"
           b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 1\r\nConnection: close\r\n\r\nd")
    answer = server.exchange(two)
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and answer.index(b'"abc"') < answer.index(b'"d"')
    assert answer.rstrip().endswith(b'"d"}')


def test_a_chunked_body_reaches_the_app_with_its_length(live):
    answer = live().exchange(b"POST / HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                             b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
    assert b'"length": 3' in answer and b'"abc"' in answer


def test_expect_100_continue_is_answered_once_admitted(live):
    server = live()
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        assert b"200 OK" in sock.recv(1000)


def test_a_wrong_token_is_refused_before_the_body_is_read(live):
    server = live(App(limit=1 << 30, token="right"))
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: l\r\nX-Auth-Token: wrong\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"40000000\r\n" + b"x" * 1000)
        answer = read_all(sock)  # answered and closed though the chunk is far from complete
    assert answer.startswith(b"HTTP/1.1 401") and b"APIG.0301" in answer and server.app.calls == 0


@pytest.mark.parametrize("data, status", [
    (b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 1001\r\n\r\n", 413),
    (b"GET /" + b"a" * 9000, 414),
    (b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 8000 + b"\r\n" + b"Y: " + b"a" * HEAD_LIMIT, 431),
    (b"POST / HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked\r\n\r\nnope\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS to a plain port
])
def test_refusals_over_a_socket_are_json(live, data, status):
    answer = live().exchange(data)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status) and b"Content-Type: application/json" in head
    assert b"X-Content-Type-Options: nosniff" in head and b"X-Frame-Options: DENY" in head  # as the app's answers
    assert set(json.loads(body)) == {"error_code", "error_msg"}


def test_a_trickled_head_is_cut_at_its_total_deadline(live):
    server = live(head_seconds=1)
    started = time.monotonic()
    with server.connect() as sock:
        threading.Thread(target=trickle, args=(sock, b"GET / HTTP/1.1\r\nHost: l\r\nX-Slow: " + b"a" * 60),
                         daemon=True).start()
        answer = sock.recv(1000)  # while a byte still arrives every 50 ms
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 2.5


def trickle(sock, data: bytes, pause: float = 0.05) -> None:
    """Send data a byte at a time until done or the socket fails."""
    for byte in data:
        try:
            sock.send(bytes([byte]))
        except OSError:
            return
        time.sleep(pause)


@pytest.mark.parametrize("data", [b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 10\r\n\r\nabc",
                                  b"POST / HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"])
def test_a_stalled_body_is_cut_after_its_idle_deadline(live, data):
    server = live(body_idle_seconds=0.5)
    started = time.monotonic()
    answer = server.exchange(data)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 2 and server.app.calls == 0


def test_idle_keep_alive_connections_are_closed(live):
    server = live(idle_seconds=0.5)
    started = time.monotonic()
    with server.connect() as sock:
        assert read_all(sock) == b"" and time.monotonic() - started < 2


def test_a_request_over_budget_is_answered_504_and_reported(live):
    server = live(app_seconds=0.5)
    answer = server.exchange(b"GET /sleep?2 HTTP/1.1\r\nHost: l\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 504") and b"ModelArts.4503" in answer and server.overruns == [1]
    time.sleep(2)  # the late answer is dropped, and the count of running calls stays right
    assert server.edge.running == 0


def test_past_the_connection_cap_the_oldest_idle_one_is_closed(live):
    server = live(max_connections=3)
    socks = [server.connect() for _ in range(3)]
    time.sleep(0.2)
    with server.connect() as newest:
        newest.sendall(b"GET / HTTP/1.1\r\nHost: l\r\n\r\n")
        assert b"200 OK" in newest.recv(1000)
    assert socks[0].recv(10) == b""  # the oldest was closed to make room
    for sock in socks:
        sock.close()


def test_draining_closes_stalled_connections_and_waits_for_running_calls(live):
    server = live()
    stalled = server.connect()
    stalled.sendall(b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 10\r\n\r\nab")
    running = server.connect()
    running.sendall(b"GET /sleep?1 HTTP/1.1\r\nHost: l\r\n\r\n")
    time.sleep(0.3)
    drained = asyncio.run_coroutine_threadsafe(server.edge.drain(5), server.loop)
    assert stalled.recv(10) == b""
    assert read_all(running).startswith(b"HTTP/1.1 200") and drained.result(5) is True
    with pytest.raises(OSError):
        server.connect(timeout=1).sendall(b"GET / HTTP/1.1\r\n\r\n")


def test_past_the_buffered_bytes_cap_the_slowest_arriving_request_is_cut(live):
    server = live(App(limit=10000), buffered_bytes=3000)
    slow = server.connect()
    slow.sendall(b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 2000\r\n\r\n" + b"a" * 1500)
    time.sleep(0.3)
    with server.connect() as fast:
        fast.sendall(b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 2000\r\n\r\n" + b"b" * 1000)
        time.sleep(0.3)
        fast.sendall(b"b" * 500)  # over the cap: the request that progressed least recently goes
        assert read_all(slow).startswith(b"HTTP/1.1 408")
        fast.sendall(b"b" * 500)
        assert b'"length": 2000' in fast.recv(1000)
    time.sleep(0.2)
    assert server.edge.buffered == 0
    slow.close()


def test_http_10_keeps_the_connection_only_when_asked_and_says_so(live):
    server = live()
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert b"Connection: keep-alive" in sock.recv(1000)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = read_all(sock)
    assert b"Connection: close" in answer and answer.startswith(b"HTTP/1.1 200")


def test_a_client_that_never_reads_its_answers_is_not_served_more_and_is_dropped(live):
    server = live(idle_seconds=1)
    with server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: l\r\n\r\n" * 50)  # 50 MB of answers asked, none read
        time.sleep(3)
        assert server.app.calls < 10 and not server.edge.connections


def test_a_call_over_budget_is_reported_even_when_its_client_left(live):
    server = live(app_seconds=0.5)
    with server.connect() as sock:
        sock.sendall(b"GET /sleep?2 HTTP/1.1\r\nHost: l\r\n\r\n")
        time.sleep(0.1)
    time.sleep(1.2)
    assert server.overruns == [1] and not server.edge.connections and server.edge.running == 0


def test_a_call_whose_client_left_is_forgotten_once_answered(live):
    server = live()
    with server.connect() as sock:
        sock.sendall(b"GET /sleep?0.3 HTTP/1.1\r\nHost: l\r\n\r\n")
        time.sleep(0.1)
    time.sleep(0.6)
    assert server.overruns == [] and not server.edge.connections and server.edge.running == 0


def read_answer(sock) -> bytes:
    """One whole answer (head and Content-Length bytes of body) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += received(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += received(sock)
    assert len(body) == length  # nothing more than one answer was sent
    return head + b"\r\n\r\n" + body


def received(sock) -> bytes:
    chunk = sock.recv(65536)
    assert chunk, "the server closed the connection before its whole answer"
    return chunk


def test_keep_alive_answers_are_written_by_the_pool_without_waking_the_loop(live):
    server = live()
    wakes = []
    collect = server.edge.write_finished
    server.edge.write_finished = lambda: (wakes.append(1), collect())  # this edge's own hook, counted
    with server.connect() as sock:
        for n in range(30):
            sock.sendall(b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: %d\r\n\r\n" % n + b"x" * n)
            assert b'"length": %d' % n in read_answer(sock)
    assert len(wakes) < 5 and server.edge.running <= 1


def test_answers_larger_than_the_socket_takes_at_once_arrive_whole_and_in_order(live):
    server = live()
    with server.connect() as sock:
        time.sleep(0.1)
        (connection,) = server.edge.connections
        # A small send buffer on the server's side: the pool thread writes part, the loop the rest.
        connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: l\r\n\r\n")
        assert read_answer(sock).endswith(b"x" * 1000)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: l\r\nContent-Length: 2\r\n\r\nok")
        assert b'"ok"' in read_answer(sock)


def test_each_connection_gives_back_its_descriptors(live):
    server = live()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: l\r\n\r\n")
            read_answer(sock)
    deadline = time.monotonic() + 5
    while server.edge.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.edge.connections and len(os.listdir("/proc/self/fd")) <= before
