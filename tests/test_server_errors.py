"""server/errors.py: every answer a client can provoke is JSON, and X-Error-Detail is always a safe line."""
from __future__ import annotations

import io
import re

import pytest

from fixtures.serving import request, wait_healthy
from modelarts_mnist.server.app import ServeConfig, create_app
from modelarts_mnist.server.errors import DETAIL_LIMIT, one_line

# gunicorn's own rule for a response header value (gunicorn/http/wsgi.py): what it refuses with an HTML 500.
GUNICORN_HEADER_VALUE = re.compile(r"[ \t\x21-\x7e\x80-\xff]*")
PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]
NO_BODY = (204, 304)


class FakeService:
    """Answers every inference with a label; its preprocessing returns the input."""

    model_name = "fake"

    def inference(self, data):
        return {"predicted_label": "1"}

    def _preprocess(self, data):
        return data


class RaisingService(FakeService):
    """Raises `error` from inference, as user code with a bad file would."""

    def __init__(self, error):
        self.error = error

    def inference(self, data):
        raise self.error


def client_for(service=None, **config):
    return create_app(service or FakeService(), ServeConfig(**config)).test_client()


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_one_line_leaves_no_control_character(char):
    line = one_line(f"bad{char}name.png{char}{char}end")
    assert PRINTABLE_ASCII.fullmatch(line), line
    assert line.startswith("bad") and line.endswith("end")


def test_one_line_escapes_rather_than_drops_what_it_cannot_send():
    assert one_line("a\x00b\x1bc\x7fd") == "a\\x00b\\x1bc\\x7fd"
    assert one_line("ziffer-\u00fc\x85.png") == "ziffer-\\xfc .png"  # NEL is a line break: a space
    assert one_line("lone \udcff surrogate") == "lone \\udcff surrogate"
    assert one_line("one\r\ntwo\u2028three") == "one two three"


@pytest.mark.parametrize("text", ["x" * 10_000, "\x00" * 10_000, "\U0001F600" * 10_000, " \n" * 50_000 + "tail",
                                  "名" * 10_000], ids=["long", "nul", "emoji", "blank-runs", "cjk"])
def test_one_line_is_bounded(text):
    line = one_line(text)
    assert len(line) <= DETAIL_LIMIT and PRINTABLE_ASCII.fullmatch(line)
    assert len(one_line(text, limit=40)) <= 40


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x9b", "\u2028", "\n"],
                         ids=["NUL", "BEL", "ESC", "DEL", "CSI", "LSEP", "LF"])
def test_a_control_character_in_a_file_name_keeps_the_detail_header_sendable(char):
    name = f"digit{char}7.png"
    response = client_for(RaisingService(TypeError(f"image {name}: cannot identify image file"))).post(
        "/", data={"images": (io.BytesIO(b"junk"), name)})
    assert response.status_code == 400 and response.is_json
    detail = response.headers["X-Error-Detail"]
    assert GUNICORN_HEADER_VALUE.fullmatch(detail) and PRINTABLE_ASCII.fullmatch(detail)
    assert "digit" in detail and "7.png" in detail


def every_request(app):
    """(method, path) for every route of app and its near misses: trailing, doubled and leading slashes."""
    paths = {"/nowhere", "/ui/static//app.js", "/ui/static/", "/ui/static/../app.py", "//", "/ui//"}
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<path:filename>", "app.js")
        paths |= {path, path.rstrip("/") or "/", path + "/", "/" + path, path.replace("/", "//")}
    return [(method, path) for path in sorted(paths) for method in METHODS]


@pytest.mark.parametrize("token", [None, "s3cret"], ids=["open", "token"])
def test_every_error_and_redirect_a_client_can_provoke_is_json(token):
    client = client_for(auth_token=token)
    answers = {}
    for method, path in every_request(client.application):
        for accept in ("*/*", "text/html"):
            response = client.open(path, method=method, headers={"Accept": accept})
            answers[(method, path, accept)] = response
            if response.status_code < 300 or response.status_code in NO_BODY:
                continue
            assert response.mimetype == "application/json", (method, path, response.status_code)
            if method != "HEAD":
                assert isinstance(response.get_json(), dict), (method, path, response.data[:80])
            if response.status_code < 400:
                assert response.headers["Location"].startswith("/"), response.headers["Location"]
    statuses = {response.status_code for response in answers.values()}
    assert {302, 308, 404, 405} <= statuses  # the kinds this test is meant to cover did happen


def test_redirects_keep_their_target_without_echoing_the_host():
    client = client_for()
    for path, target in [("/ui", "/ui/"), ("/ui/static//app.js", "/ui/static/app.js"), ("/ui?x=1", "/ui/?x=1")]:
        response = client.get(path, headers={"Host": "evil.example"})
        assert response.status_code == 308
        assert response.headers["Location"] == target
        assert response.get_json() == {"location": target}
    browser = client.get("/", headers={"Accept": "text/html"})
    assert (browser.status_code, browser.headers["Location"], browser.get_json()) == (302, "/ui/", {"location": "/ui/"})


def test_werkzeug_http_server_error_is_json_with_its_detail():
    from werkzeug.exceptions import InternalServerError

    app = create_app(FakeService(), ServeConfig())

    @app.get("/broken")
    def broken():
        raise InternalServerError("disk\x00full")

    response = app.test_client().get("/broken")
    assert response.status_code == 500 and response.get_json()["error_code"] == "MR.0101"
    assert response.headers["X-Error-Detail"] == "disk\\x00full"



NAMING_SERVICE = '''
from model_service.model_service import SingleNodeService


class Naming(SingleNodeService):
    """Refuses every file, naming it, as user code with an unreadable image does."""

    def _preprocess(self, data):
        for field, files in data.items():
            for name in files:
                raise TypeError(f"cannot identify image file {name}")
'''


@pytest.mark.parametrize("args", [("--threaded",), ("--workers", "1")], ids=["threaded", "gunicorn"])
def test_a_served_control_character_file_name_gets_a_json_400_and_one_log_line(tmp_path, start_serve, args):
    package = tmp_path / "naming-model"
    package.mkdir()
    (package / "customize_service.py").write_text(NAMING_SERVICE, encoding="utf-8")
    serve = start_serve(package, *args)
    wait_healthy(serve)
    name = "seven\x01\x1b[31m\x7f\xc2\x85.png".encode("latin-1")  # C0, ESC, DEL and a UTF-8 NEL, raw
    body = (b'--b\r\nContent-Disposition: form-data; name="images"; filename="' + name + b'"\r\n'
            b"Content-Type: image/png\r\n\r\nnot a png\r\n--b--\r\n")
    status, headers, answer = request(serve, "POST", "/", body, {"Content-Type": "multipart/form-data; boundary=b"})
    assert status == 400 and isinstance(answer, dict), answer
    detail = headers["X-Error-Detail"]
    assert PRINTABLE_ASCII.fullmatch(detail) and "seven" in detail and ".png" in detail
    serve.stop()
    log = serve.log.read_text(errors="replace")
    [line] = [line for line in log.splitlines() if "400 POST /: " in line]  # warm-up's own line aside
    assert "seven\\x01\\x1b[31m\\x7f" in line and "Traceback" not in log
