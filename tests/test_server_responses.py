"""ServiceResponse and ServiceJSONProvider: the server gets exactly what Flask's and werkzeug's own would hand it."""
from __future__ import annotations

import dataclasses
import datetime
import decimal
import uuid

import pytest
from flask import Flask, Response

from modelarts_mnist.server.responses import ServiceJSONProvider, ServiceResponse

GET = {"REQUEST_METHOD": "GET", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "HTTP_HOST": "127.0.0.1:8080",
       "wsgi.url_scheme": "http", "SCRIPT_NAME": "", "PATH_INFO": "/ui", "QUERY_STRING": ""}
ANSWERS = {
    "json": dict(response=b'{"predicted_label": "7"}', mimetype="application/json"),
    "text": dict(response="caf\u00e9", mimetype="text/plain"),
    "created": dict(response=b"{}", status=201),
    "redirect": dict(response=b"", status=302, headers={"Location": "/ui/caf\u00e9?a=1"}),
    "2xx with Location": dict(response=b"{}", status=201, headers={"Location": "/items/1"}),
    "content location": dict(response=b"{}", headers={"Content-Location": "/r\u00e9sum\u00e9"}),
    "no content": dict(response=b"", status=204),
    "not modified": dict(response=b"x", status=304, headers={"ETag": '"a"'}),
    "error": dict(response=b'{"error": "x"}', status=400),
    "streamed": dict(response=lambda: iter([b"a", b"b"])),  # a fresh iterator for each response
    "list of str": dict(response=["a", "b"]),
    "passthrough": dict(response=[b"raw"], direct_passthrough=True),
}


def served(response_class: type[Response], method: str, answer: dict, on_close: list | None = None) -> tuple:
    """What a WSGI server gets: status, headers, the body it reads, and whether the close callback ran."""
    response = response_class(**{key: value() if callable(value) else value for key, value in answer.items()})
    if on_close is not None:
        response.call_on_close(lambda: on_close.append(True))
    app_iter, status, headers = response.get_wsgi_response({**GET, "REQUEST_METHOD": method})
    body = b"".join(app_iter)
    if hasattr(app_iter, "close"):
        app_iter.close()
    return status, headers, body, bool(on_close)


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
@pytest.mark.parametrize("name", ANSWERS)
def test_every_answer_reaches_the_server_as_werkzeug_sends_it(name, method):
    assert served(ServiceResponse, method, ANSWERS[name]) == served(Response, method, ANSWERS[name])


@pytest.mark.parametrize("name", ["json", "redirect"])
def test_close_callbacks_still_run(name):
    assert served(ServiceResponse, "GET", ANSWERS[name], on_close=[])[3] is True


def test_a_plain_answer_takes_the_short_way_and_a_redirect_does_not():
    environ = {**GET, "REQUEST_METHOD": "POST"}
    assert ServiceResponse(**ANSWERS["json"]).is_plain(environ)
    assert not ServiceResponse(**ANSWERS["redirect"]).is_plain(environ)
    assert not ServiceResponse(**ANSWERS["json"]).is_plain({**environ, "REQUEST_METHOD": "HEAD"})


def test_the_headers_handed_over_are_a_copy():
    response = ServiceResponse(**ANSWERS["json"])
    _, _, headers = response.get_wsgi_response({**GET, "REQUEST_METHOD": "POST"})
    headers.append(("X-Extra", "1"))
    assert "X-Extra" not in response.headers


@dataclasses.dataclass
class Point:
    x: int
    y: int


OBJECTS = [
    {"predicted_label": "7", "scores": [["7", "0.982"], ["1", "0.010"]]},
    {"z": 1, "a": "caf\u00e9 \u6570\u5b57", "nested": {"b": [1.5, None, True]}},
    [datetime.date(2026, 12, 3), uuid.UUID(int=7), decimal.Decimal("1.25"), Point(1, 2)],
    "just text",
]
SETTINGS = [{}, {"ensure_ascii": False, "sort_keys": False}, {"compact": False}, {"debug": True},
            {"sort_keys": False, "compact": True, "debug": True}]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("obj", OBJECTS)
def test_json_answers_are_flasks_own(obj, settings):
    ours, theirs = Flask("ours"), Flask("theirs")
    ours.json = ServiceJSONProvider(ours)
    for app in (ours, theirs):
        app.debug = settings.get("debug", False)
        for name in ("ensure_ascii", "sort_keys", "compact"):
            if name in settings:
                setattr(app.json, name, settings[name])
    answer = ours.json.response(obj)
    assert (answer.get_data(), answer.mimetype) == (theirs.json.response(obj).get_data(), "application/json")


def test_a_setting_changed_after_an_answer_applies_to_the_next():
    app = Flask("ours")
    app.json = ServiceJSONProvider(app)
    assert app.json.response({"a": "\u00e9"}).get_data() == b'{"a":"\\u00e9"}\n'
    app.json.ensure_ascii = False
    assert app.json.response({"a": "\u00e9"}).get_data() == '{"a":"\u00e9"}\n'.encode()
