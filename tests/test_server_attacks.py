"""Attacks on a real `serve` over real sockets: stalling clients, malformed HTTP, early refusals, budgets."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest

from fixtures.serving import connect, multipart, read_until_closed, request, wait_healthy

MODES = [("--threaded",), ("--workers", "2")]
MODE_IDS = ["threaded", "gunicorn"]


def stalled_connections(serve, count: int) -> tuple[list[socket.socket], threading.Event]:
    """count connections in four stalled states; a thread keeps trickling header bytes on a quarter."""
    head = f"POST / HTTP/1.1\r\nHost: localhost:{serve.port}\r\nContent-Type: application/json\r\n"
    kinds = [
        (head + "Content-Length: 100\r\n\r\n").encode(),  # silent after the headers
        head.encode()[:20],  # header bytes trickled from here on
        (head + "Content-Length: 1000\r\n\r\n").encode() + b"{" * 500,  # half a body
        (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"100\r\n" + b"x" * 50,  # half a chunked body
    ]
    socks, trickled = [], []
    for index in range(count):
        sock = connect(serve)
        sock.sendall(kinds[index % 4])
        socks.append(sock)
        if index % 4 == 1:
            trickled.append(sock)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):
            for sock in trickled:
                try:
                    sock.send(b"X-A: b\r\n"[:1])
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    return socks, stop


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


@pytest.mark.parametrize("args", MODES, ids=MODE_IDS)
def test_200_stalled_connections_do_not_stall_health_or_predictions(echo_package, start_serve, args):
    serve = start_serve(echo_package, *args)
    wait_healthy(serve)
    socks, stop = stalled_connections(serve, 200)
    body, headers = multipart({"images": b"\x89PNG digit"})
    try:
        time.sleep(0.5)
        for _ in range(5):
            seconds, answer = timed(lambda: request(serve, "GET", "/health", timeout=5))
            assert answer[0] == 200 and seconds < 1, (seconds, answer)
            seconds, answer = timed(lambda: request(serve, "POST", "/", body, headers, timeout=5))
            assert answer[0] == 200 and answer[2]["files"] == {"images": ["images.png"]} and seconds < 1
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_stalled_clients_are_cut_after_the_head_and_body_deadlines(echo_package, start_serve):
    serve = start_serve(echo_package, "--workers", "1")
    wait_healthy(serve)
    socks, stop = stalled_connections(serve, 8)
    try:
        socks[0].settimeout(15)
        started = time.monotonic()
        answers = [read_until_closed(sock) for sock in socks]  # each closed by the service, none by us
        assert time.monotonic() - started < 14  # head 10 s in total, body 10 s of silence
        assert all(answer.startswith(b"HTTP/1.1 408") and b'"MR.0101"' in answer for answer in answers)
    finally:
        stop.set()
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("args", MODES, ids=MODE_IDS)
def test_sigterm_stops_within_10_s_with_stalled_uploads_and_finishes_running_requests(echo_package, start_serve,
                                                                                       args):
    serve = start_serve(echo_package, *args)
    wait_healthy(serve)
    socks, stop = stalled_connections(serve, 40)
    body, headers = multipart({"images": b"x", "sleep": "1.5"})
    answers = []
    slow = threading.Thread(target=lambda: answers.append(request(serve, "POST", "/", body, headers)))
    slow.start()
    time.sleep(0.5)
    started = time.monotonic()
    try:
        assert serve.stop(timeout=15) == 0, serve.log.read_text()
        assert time.monotonic() - started < 10
        slow.join(5)
        assert answers and answers[0][0] == 200
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_a_killed_worker_is_not_counted_healthy_until_its_replacement_is_warm(echo_package, start_serve):
    serve = start_serve(echo_package, "--workers", "2", ECHO_LOAD_SECONDS="2")
    wait_healthy(serve)
    body, headers = multipart({"images": b"x"})
    pids = {request(serve, "POST", "/", body, headers)[2]["pid"] for _ in range(30)}
    assert len(pids) == 2
    victim = pids.pop()
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    time.sleep(0.2)  # the master reaps it on SIGCHLD
    seen = []
    while not seen or seen[-1] != 200:
        assert time.monotonic() - killed < 30, seen[-5:]
        seen.append(request(serve, "GET", "/health", timeout=5)[0])
        time.sleep(0.05)
    assert 503 in seen and time.monotonic() - killed >= 2  # the replacement loads for 2 s before it counts
    answered = {request(serve, "POST", "/", body, headers)[2]["pid"] for _ in range(30)}
    assert victim not in answered and len(answered) == 2


MALFORMED = [
    (b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: localhost\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\n Folded: x\r\n\r\n", 400),
    (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 13000000\r\n\r\n", 413),
    (b"GET / HTTP/3.0\r\nHost: localhost\r\n\r\n", 505),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
    (b"GET /ui HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 308),
    (b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 404),
]


@pytest.mark.parametrize("args", MODES, ids=MODE_IDS)
def test_every_malformed_request_gets_json_with_its_status(echo_package, start_serve, args):
    serve = start_serve(echo_package, *args)
    wait_healthy(serve)
    for raw, status in MALFORMED:
        with connect(serve) as sock:
            sock.sendall(raw)
            answer = read_until_closed(sock)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), (raw[:60], answer[:300])
        assert b"Content-Type: application/json" in head, (raw[:60], head)
        json.loads(body)
    assert request(serve, "GET", "/health")[0] == 200


@pytest.mark.parametrize("framing", [b"Transfer-Encoding: chunked", b"Content-Length: 12000000"])
def test_a_wrong_token_is_refused_before_the_body_is_read(echo_package, start_serve, framing):
    serve = start_serve(echo_package, "--workers", "1", MODELARTS_MNIST_AUTH_TOKEN="right")
    wait_healthy(serve)
    with connect(serve, timeout=3) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Auth-Token: wrong\r\n" + framing + b"\r\n\r\n")
        seconds, answer = timed(lambda: read_until_closed(sock))  # no body byte sent: answered anyway
    assert answer.startswith(b"HTTP/1.1 401") and b"APIG.0301" in answer and seconds < 1


@pytest.mark.parametrize("args", MODES, ids=MODE_IDS)
def test_on_loopback_only_loopback_host_names_are_answered(echo_package, start_serve, args):
    serve = start_serve(echo_package, *args)
    wait_healthy(serve)
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example"):
        status, headers, answer = request(serve, "GET", "/health", headers={"Host": host})
        assert status == 403 and answer["error_code"] == "APIG.0101" and "loopback" in headers["X-Error-Detail"]
    for host in (f"localhost:{serve.port}", "127.0.0.1", "[::1]:80", "app.localhost"):
        assert request(serve, "GET", "/health", headers={"Host": host})[0] == 200


@pytest.mark.parametrize("args", MODES, ids=MODE_IDS)
def test_a_request_over_the_time_budget_gets_json_and_frees_its_worker(echo_package, start_serve, args):
    serve = start_serve(echo_package, *args, "--time-budget", "2")  # ample for the echo, even on a busy machine
    wait_healthy(serve)
    body, headers = multipart({"images": b"x"})
    before = {request(serve, "POST", "/", body, headers)[2]["pid"] for _ in range(20)}
    slow_body, slow_headers = multipart({"images": b"x", "sleep": "30"})
    seconds, (status, answer_headers, answer) = timed(lambda: request(serve, "POST", "/", slow_body, slow_headers))
    assert status == 504 and answer["error_code"] == "ModelArts.4503" and 2 <= seconds < 4
    assert "2 s" in answer_headers["X-Error-Detail"]
    time.sleep(0.5)
    wait_healthy(serve, timeout=30)
    after = {request(serve, "POST", "/", body, headers)[2]["pid"] for _ in range(20)}
    if "--threaded" in args:
        assert after == before == {serve.proc.pid}  # one process: the stuck thread was replaced
    else:
        assert len(after) == 2 and len(after & before) == 1  # the stuck worker retired; gunicorn started another
