"""How `serve` runs: real HTTP against a subprocess (threaded and gunicorn), draining on SIGTERM."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from fixtures.serving import multipart, raw_exchange, request, wait_healthy
from modelarts_mnist.server.runner import WORKERS_PER_CORE, default_workers, tf_threads_for


def test_threaded_serve_answers_503_while_loading_then_predicts(echo_package, start_serve):
    serve = start_serve(echo_package, "--threaded", ECHO_LOAD_SECONDS="2")
    assert serve.port, serve.first_line
    seen = wait_healthy(serve)
    assert seen[0] == 503 and seen[-1] == 200
    body, headers = multipart({"images": b"\x89PNG", "note": "hi"})
    status, _, answer = request(serve, "POST", "/", body, headers)
    assert status == 200
    assert answer["fields"] == ["images", "note"] and answer["files"] == {"images": ["images.png"]}
    assert request(serve, "GET", "/health")[2] == {"health": "true"}


@pytest.mark.parametrize("args", [("--threaded",), ("--workers", "2")], ids=["threaded", "gunicorn"])
def test_sigterm_lets_the_in_flight_request_finish(echo_package, start_serve, args):
    serve = start_serve(echo_package, *args)
    wait_healthy(serve)
    body, headers = multipart({"images": b"x", "sleep": "2"})
    answers = []
    slow = threading.Thread(target=lambda: answers.append(request(serve, "POST", "/", body, headers)))
    slow.start()
    time.sleep(0.7)  # the request is now inside the service's sleep
    started = time.monotonic()
    assert serve.stop() == 0, serve.log.read_text()
    slow.join(10)
    assert answers and answers[0][0] == 200 and answers[0][2]["fields"] == ["images", "sleep"]
    assert time.monotonic() - started < 15


def test_gunicorn_workers_each_listen_and_share_the_connections(echo_package, start_serve):
    serve = start_serve(echo_package, "--workers", "2")
    wait_healthy(serve)
    assert listening_sockets(serve.port) == 2  # one SO_REUSEPORT socket per worker; the master only holds the port
    body, headers = multipart({"images": b"x"})
    pids = [request(serve, "POST", "/", body, headers)[2]["pid"] for _ in range(40)]
    assert serve.proc.pid not in pids and len(set(pids)) == 2  # the kernel spread 40 connections over both


def listening_sockets(port: int) -> int:
    """How many TCP sockets on this machine listen on port (from /proc/net/tcp, state 0A)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


@pytest.mark.parametrize("args", [("--threaded",), ("--workers", "2")], ids=["threaded", "gunicorn"])
def test_a_port_another_server_listens_on_is_a_clear_error_before_tensorflow_starts(echo_package, start_serve,
                                                                                     tmp_path, args):
    (echo_package / "saved_model.pb").write_bytes(b"")  # a SavedModel package: its engine would start
    fakes = tmp_path / "fake-engines"
    marker = tmp_path / "engine-imported"
    for name in ("tensorflow", "ai_edge_litert"):  # record any import of an engine, then fail it
        (fakes / name).mkdir(parents=True)
        (fakes / name / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write({name!r})\nraise ImportError('not in this test')\n")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        serve = start_serve(echo_package, *args, "--port", str(port),  # the later --port wins
                            PYTHONPATH=os.pathsep.join([str(fakes), os.environ.get("PYTHONPATH", "")]))
        assert serve.proc.wait(60) != 0
        log = serve.log.read_text()
        assert str(port) in log and "in use" in log and "Traceback" not in log
        assert len(log.strip().splitlines()) == 1, log
        assert not marker.exists()


@pytest.mark.parametrize("args", [("--threaded",), ("--workers", "1")], ids=["threaded", "gunicorn"])
def test_malformed_requests_over_http_get_json_errors_and_the_server_survives(echo_package, start_serve, args):
    serve = start_serve(echo_package, *args)
    wait_healthy(serve)
    huge = raw_exchange(serve, b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 99999999999\r\n\r\n{}", close_write=False)
    assert huge.startswith(b"HTTP/1.1 413") and b'"APIG.0201"' in huge
    truncated = raw_exchange(serve, b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                                    b"Content-Length: 1000\r\n\r\n{\"images\"")
    assert truncated.split(b" ")[1] == b"400" and b"MR.0101" in truncated
    chunked = raw_exchange(serve, b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n" + chunks(13 * 1024 * 1024))
    assert chunked.startswith(b"HTTP/1.1 413") and b'"APIG.0201"' in chunked
    status, headers, answer = request(serve, "POST", "/", b"not json", {"Content-Type": "text/plain"})
    assert status == 400 and answer["erno"] == "MR.0101" and headers["Content-Type"] == "application/json"
    assert request(serve, "GET", "/health")[0] == 200


def chunks(total: int, size: int = 1 << 20) -> bytes:
    """A chunked-encoded body of `total` bytes of x."""
    piece = f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"
    return piece * (total // size) + b"0\r\n\r\n"


@pytest.mark.parametrize("args", [("--threaded",), ()], ids=["threaded", "default"])
def test_a_package_that_fails_to_load_stops_serve_with_an_error(tmp_path, start_serve, args):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    serve = start_serve(empty, *args)
    assert serve.proc.wait(60) == 1
    assert "customize_service.py: file not found" in serve.log.read_text()


def test_tensorflow_threads_are_shared_among_workers():
    cores = len(os.sched_getaffinity(0))
    assert tf_threads_for(1) == cores
    assert tf_threads_for(cores * 4) == 1


def test_default_serve_answers_from_gunicorn_workers(echo_package, start_serve):
    serve = start_serve(echo_package)
    wait_healthy(serve)
    body, headers = multipart({"images": b"x"})
    assert request(serve, "POST", "/", body, headers)[2]["pid"] != serve.proc.pid


def test_default_workers_scale_with_cores_as_serve_help_says():
    from click.testing import CliRunner

    from modelarts_mnist.cli.serve import serve

    assert default_workers() == WORKERS_PER_CORE * len(os.sched_getaffinity(0))
    assert f"[default: {WORKERS_PER_CORE} per core]" in CliRunner().invoke(serve, ["--help"]).output

