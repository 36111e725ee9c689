"""server/logs.py: a client error is one line, a server error one traceback, and a flood stays small."""
from __future__ import annotations

import io
import logging
import time

import pytest
from werkzeug.test import EnvironBuilder

from modelarts_mnist.errors import InferenceFailed
from modelarts_mnist.server.app import ServeConfig, create_app
from modelarts_mnist.server.logs import (CLIENT_BURST, CLIENT_PER_SECOND, SERVER_BURST, SERVER_PER_SECOND,
                                      TRACEBACK_LIMIT, Bucket, ErrorLog, format_traceback)

SERVER_LOGGERS = "modelarts_mnist.server"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeService:
    """Answers a label; raises `error` instead when given one."""

    model_name = "fake"

    def __init__(self, error=None):
        self.error = error

    def inference(self, data):
        if self.error is not None:
            raise self.error
        return {"predicted_label": "1"}


class Collected(logging.Handler):
    """Every formatted record, as a real log file would get it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture()
def collected():
    """The service's log records (modelarts_mnist.server.*) while the test runs, formatted."""
    handler, logger = Collected(), logging.getLogger(SERVER_LOGGERS)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_bucket_allows_a_burst_then_one_per_refill_and_counts_the_rest():
    clock = FakeClock()
    bucket = Bucket(3, 0.5, clock=clock)
    assert [bucket.take()[0] for _ in range(5)] == [True, True, True, False, False]
    clock.now += 1.9  # not yet a whole token back
    assert bucket.take()[0] is False
    clock.now += 0.2
    assert bucket.take() == (True, 3, pytest.approx(2.1))  # three refused, the first 2.1 s ago
    assert bucket.take()[0] is False


def test_error_log_writes_one_summary_before_the_next_line_it_allows(collected):
    clock = FakeClock()
    log = ErrorLog(logging.getLogger(f"{SERVER_LOGGERS}.test"), clock=clock, client=(2, 0.1))
    for n in range(50):
        log.client_error(404, f"GET /nothing-{n}: not found")
    assert len(collected.lines) == 2
    clock.now += 10
    log.client_error(400, "POST /: bad json")
    summary, line = collected.records[2:]
    assert summary.getMessage() == "48 client errors not logged in the last 10 s"
    assert line.getMessage() == "400 POST /: bad json"


@pytest.mark.parametrize("error", [KeyError("images"), TypeError("not an image"),
                                   InferenceFailed("TypeError: image a.png: cannot identify", http_status=400)],
                         ids=["KeyError", "TypeError", "InferenceFailed-400"])
def test_a_client_error_from_user_code_is_one_line_without_traceback(error, collected):
    client = create_app(FakeService(error), ServeConfig()).test_client()
    assert client.post("/", data={"images": (io.BytesIO(b"x"), "a.png")}).status_code == 400
    [record] = collected.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "\n" not in collected.text and record.getMessage().startswith("400 POST /: ")


def test_a_server_error_logs_its_traceback_once(collected):
    client = create_app(FakeService(ValueError("boom")), ServeConfig()).test_client()
    assert client.post("/", data={"images": (io.BytesIO(b"x"), "a.png")}).status_code == 500
    [record] = collected.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "Traceback (most recent call last)" in collected.text
    assert "ValueError: boom" in collected.text and 'in inference\n    raise self.error' in collected.text


def test_a_huge_message_is_clipped_in_the_traceback(collected):
    client = create_app(FakeService(ValueError("x" * 1_000_000)), ServeConfig()).test_client()
    client.post("/", json={"images": "x"})
    assert 1000 < len(collected.text) < 20_000
    assert "characters left out" in collected.text and "Traceback" in collected.text


def test_format_traceback_keeps_short_ones_whole():
    try:
        raise RuntimeError("short")
    except RuntimeError as error:
        text = format_traceback(error)
    assert text.startswith("Traceback") and text.endswith("RuntimeError: short")


def test_a_path_with_line_breaks_cannot_forge_log_lines(collected):
    client = create_app(FakeService(), ServeConfig()).test_client()
    client.get("/nothing%0A2026-01-01 00:00:00 ERROR fake: forged%0D%00")
    [line] = collected.lines
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    assert "\\x00" in line


def flood(app, count):
    """count bad requests of several kinds straight into the WSGI app: unknown paths, wrong methods,
    bad JSON, guessed tokens, redirects (environs built once: the test client's own cost is 10x the app's)."""
    kinds = [("GET", "/scan/{n}", {}, b""), ("PUT", "/", {}, b""),
             ("POST", "/", {"Content-Type": "application/json", "X-Auth-Token": "s3cret"}, b"{oops"),
             ("GET", "/ui/model.json", {"X-Auth-Token": "guess-{n}"}, b""), ("GET", "/ui", {}, b"")]
    environs = [EnvironBuilder(method=method, path=path, headers=headers, data=body).get_environ()
                for method, path, headers, body in kinds]
    statuses = []
    for n in range(count):
        environ = dict(environs[n % len(kinds)])
        environ["PATH_INFO"] = environ["PATH_INFO"].replace("{n}", str(n))
        if "HTTP_X_AUTH_TOKEN" in environ:
            environ["HTTP_X_AUTH_TOKEN"] = environ["HTTP_X_AUTH_TOKEN"].replace("{n}", str(n))
        environ["wsgi.input"] = io.BytesIO(kinds[n % len(kinds)][3])
        b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(int(status[:3]))))
    return statuses


def test_a_flood_of_ten_thousand_bad_requests_leaves_a_bounded_log(collected):
    app = create_app(FakeService(), ServeConfig(auth_token="s3cret"))
    started = time.monotonic()
    statuses = flood(app, 10_000)
    elapsed = time.monotonic() - started
    assert set(statuses) == {404, 405, 400, 401, 308}
    # A burst, then at most one line and one summary per refill period while the flood lasts.
    bound = CLIENT_BURST + 2 * (1 + CLIENT_PER_SECOND * elapsed)
    assert len(collected.lines) <= bound, (len(collected.lines), elapsed)
    assert len(collected.lines) <= 100  # under 1% of the requests, however slow this machine is
    assert len(collected.text) <= bound * 400
    assert all("\n" not in line for line in collected.lines)
    # The service still says what it refused, and how much it left out.
    client_lines = [r.getMessage() for r in collected.records]
    assert any(m.startswith("404 GET /scan/") for m in client_lines)
    assert any(m.startswith("401 GET /ui/model.json") for m in client_lines)


def test_client_and_server_errors_have_separate_budgets(collected):
    clock = FakeClock()
    log = ErrorLog(logging.getLogger(f"{SERVER_LOGGERS}.test"), clock=clock, client=(1, 0.01), server=(1, 0.01))
    for _ in range(100):
        log.client_error(404, "GET /x: not found")
    log.server_error(500, "POST /: failed", RuntimeError("disk"))
    assert [r.levelno for r in collected.records] == [logging.WARNING, logging.ERROR]


def test_warm_up_answers_are_reported_once_by_the_warm_up_not_per_request(collected):
    create_app(config=ServeConfig(load_in_background=False), loader=lambda config: FakeService(KeyError("image")))
    assert [r.name for r in collected.records if r.levelno >= logging.WARNING] == ["modelarts_mnist.server.loading"]


def test_a_flood_of_server_errors_logs_a_bounded_number_of_tracebacks(collected):
    app = create_app(FakeService(ValueError("boom " * 2000)), ServeConfig())
    environ = EnvironBuilder(method="POST", path="/", json={"images": "x"}).get_environ()
    started = time.monotonic()
    for _ in range(1000):
        b"".join(app({**environ, "wsgi.input": io.BytesIO(b'{"images": "x"}')}, lambda *args: None))
    bound = SERVER_BURST + 2 * (1 + SERVER_PER_SECOND * (time.monotonic() - started))
    assert sum("Traceback" in line for line in collected.lines) <= min(bound, 50)
    assert len(collected.text) <= bound * (TRACEBACK_LIMIT + 1000)
