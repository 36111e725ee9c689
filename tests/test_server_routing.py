"""ServiceFlask: adapters bound once per Host, ensure_sync decided once, a shared null session; as Flask's own."""
from __future__ import annotations

import asyncio
import threading

import pytest
from flask import Flask, session
from werkzeug.exceptions import BadHost, SecurityError
from werkzeug.routing import Map

from modelarts_mnist.server.app import ServeConfig, create_app
from modelarts_mnist.server.routing import MAX_BOUND_HOSTS, MAX_KEPT_MATCHES, MAX_SYNC_FUNCTIONS, ServiceFlask

BASE = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "HTTP_HOST": "127.0.0.1:8080",
        "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_CONNECTION": "keep-alive"}
HOSTS = {
    "loopback with port": {},
    "upper case, default port": {"HTTP_HOST": "LOCALHOST:80"},
    "https default port": {"HTTP_HOST": "Example.COM:443", "wsgi.url_scheme": "https"},
    "https, same Host": {"wsgi.url_scheme": "https"},
    "no Host": {"HTTP_HOST": None},
    "no Host, IPv6 server": {"HTTP_HOST": None, "SERVER_NAME": "::1", "SERVER_PROTOCOL": "HTTP/1.0"},
    "no Host, port 80": {"HTTP_HOST": None, "SERVER_PORT": "80"},
    "no Host, port 9090": {"HTTP_HOST": None, "SERVER_PORT": "9090"},
    "invalid characters": {"HTTP_HOST": "bad host"},
    "UTF-8 bytes as latin-1": {"HTTP_HOST": "m\xc3\xbcnchen.example"},
    "label over 63 octets (BadHost)": {"HTTP_HOST": "a" * 64 + ".example"},
    "websocket upgrade": {"HTTP_CONNECTION": "keep-alive, Upgrade", "HTTP_UPGRADE": "websocket"},
    "h2c upgrade": {"HTTP_CONNECTION": "keep-alive, Upgrade", "HTTP_UPGRADE": "h2c"},
    "mounted under a script name": {"SCRIPT_NAME": "/app"},
    "connection close": {"HTTP_CONNECTION": "close"},
}
PATHS = {
    "root": {},
    "page with query": {"REQUEST_METHOD": "GET", "PATH_INFO": "/ui/", "QUERY_STRING": "a=1&b=%20"},
    "UTF-8 path as latin-1": {"PATH_INFO": "/caf\xc3\xa9", "QUERY_STRING": "q=\xc3\xa9"},
    "invalid UTF-8": {"PATH_INFO": "/\xff\xfe"},
    "no PATH_INFO or QUERY_STRING": {"PATH_INFO": None, "QUERY_STRING": None},
    "empty PATH_INFO": {"PATH_INFO": ""},
    "double slash": {"PATH_INFO": "//"},
}


def environ(*changes: dict) -> dict:
    """BASE with changes applied; a None value removes the key."""
    merged = dict(BASE)
    for change in changes:
        merged.update(change)
    return {key: value for key, value in merged.items() if value is not None}


def bind(app: Flask, env: dict) -> tuple:
    """What app.create_url_adapter makes of env: the adapter's fields and request.host, or the error."""
    request = app.request_class(env)
    try:
        adapter = app.create_url_adapter(request)
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return type(exc), str(exc)
    fields = {key: value for key, value in vars(adapter).items() if key not in ("map", "kept")}
    return fields, request.host, adapter.map is app.url_map


def with_routes(app: Flask) -> Flask:
    app.add_url_rule("/", "predict", lambda: "", methods=["POST"])
    app.add_url_rule("/ui/", "page", lambda: "")
    return app


@pytest.mark.parametrize("host", list(HOSTS.values()), ids=list(HOSTS))
@pytest.mark.parametrize("path", list(PATHS.values()), ids=list(PATHS))
def test_adapter_is_flasks_own_when_first_bound_and_when_reused(host, path):
    ours, flask = with_routes(ServiceFlask(__name__)), with_routes(Flask(__name__))
    first = bind(ours, environ(host))  # binds the host
    assert first == bind(flask, environ(host))
    assert bind(ours, environ(host, path)) == bind(flask, environ(host, path))  # reuses it


CONFIG_CHANGES = [
    lambda app: None,
    lambda app: app.config.update(SERVER_NAME="example.com"),
    lambda app: app.config.update(TRUSTED_HOSTS=["127.0.0.1", ".example.com"]),
    lambda app: app.config.update(SERVER_NAME=None),
    lambda app: setattr(app.url_map, "default_subdomain", "www"),
    lambda app: app.config.update(TRUSTED_HOSTS=None),
]


def test_adapter_is_flasks_own_for_every_request_while_config_changes():
    ours, flask = with_routes(ServiceFlask(__name__)), with_routes(Flask(__name__))
    for change in CONFIG_CHANGES:
        change(ours)
        change(flask)
        for host in HOSTS.values():
            for path in PATHS.values():
                assert bind(ours, environ(host, path)) == bind(flask, environ(host, path)), (host, path)


def test_trusted_hosts_are_checked_on_every_request_and_follow_config_changes():
    app = with_routes(ServiceFlask(__name__))
    app.config["TRUSTED_HOSTS"] = ["good.example"]
    good, bad = environ({"HTTP_HOST": "good.example"}), environ({"HTTP_HOST": "bad.example"})
    assert bind(app, good)[1] == "good.example"
    assert bind(app, good)[1] == "good.example"  # reused
    assert bind(app, bad)[0] is SecurityError
    assert bind(app, bad)[0] is SecurityError  # a refused Host is never kept
    app.config["TRUSTED_HOSTS"] = ["bad.example"]
    assert bind(app, good)[0] is SecurityError  # a Host bound under the former list is not trusted now
    assert bind(app, bad)[1] == "bad.example"


def test_unencodable_host_is_refused_on_every_request():
    app = with_routes(ServiceFlask(__name__))
    long_label = environ({"HTTP_HOST": "a" * 64 + ".example"})
    assert bind(app, long_label)[0] is BadHost
    assert bind(app, long_label)[0] is BadHost
    assert app.bound_hosts == {}


class CountingMap(Map):
    """A URL map that counts how often it is bound to a request."""

    binds = 0

    def bind_to_environ(self, *args, **kwargs):
        CountingMap.binds += 1
        return super().bind_to_environ(*args, **kwargs)


class CountingFlask(ServiceFlask):
    url_map_class = CountingMap


def test_map_is_bound_once_per_distinct_host():
    app = with_routes(CountingFlask(__name__))
    CountingMap.binds = 0
    for path in PATHS.values():
        bind(app, environ(path))
    assert CountingMap.binds == 1
    bind(app, environ({"HTTP_HOST": "localhost:8080"}))
    bind(app, environ({"HTTP_HOST": "localhost:8080", "PATH_INFO": "/ui/"}))
    assert CountingMap.binds == 2


def test_bound_hosts_stay_bounded_against_many_host_values():
    app = with_routes(ServiceFlask(__name__))
    for number in range(3 * MAX_BOUND_HOSTS):
        assert bind(app, environ({"HTTP_HOST": f"host{number}.example"}))[1] == f"host{number}.example"
        assert len(app.bound_hosts) <= MAX_BOUND_HOSTS
    assert bind(app, environ())[1] == "127.0.0.1:8080"


def with_view_routes(app: Flask) -> Flask:
    """with_routes, and rules with arguments, a redirect, defaults and a method-only rule."""
    with_routes(app)
    app.add_url_rule("/files/<path:name>", "file", lambda name: name)
    app.add_url_rule("/items/<int:number>", "item", lambda number: str(number), methods=["GET", "DELETE"])
    app.add_url_rule("/old", "old", redirect_to="/ui/")
    paged = lambda page: str(page)  # noqa: E731 - one view for both rules, as Flask requires
    app.add_url_rule("/page/", "paged", paged, defaults={"page": 1})
    app.add_url_rule("/page/<int:page>", "paged", paged)
    return app


MATCHES = {
    "root POST": {}, "root GET (405)": {"REQUEST_METHOD": "GET"},
    "page": {"REQUEST_METHOD": "GET", "PATH_INFO": "/ui/"},
    "page without slash (redirect)": {"REQUEST_METHOD": "GET", "PATH_INFO": "/ui"},
    "file": {"REQUEST_METHOD": "GET", "PATH_INFO": "/files/a/b.txt"},
    "other file": {"REQUEST_METHOD": "GET", "PATH_INFO": "/files/c.txt"},
    "item": {"REQUEST_METHOD": "DELETE", "PATH_INFO": "/items/42"},
    "item, not a number (404)": {"REQUEST_METHOD": "GET", "PATH_INFO": "/items/x"},
    "rule redirect": {"REQUEST_METHOD": "GET", "PATH_INFO": "/old"},
    "default page (redirect)": {"REQUEST_METHOD": "GET", "PATH_INFO": "/page/1"},
    "merged slashes (redirect)": {"REQUEST_METHOD": "GET", "PATH_INFO": "//ui/"},
    "unknown (404)": {"PATH_INFO": "/nowhere"},
    "HEAD": {"REQUEST_METHOD": "HEAD", "PATH_INFO": "/ui/"},
    "OPTIONS": {"REQUEST_METHOD": "OPTIONS"},
}


def matched(app: Flask, env: dict) -> tuple:
    """What Flask's request context makes of env: the rule's endpoint and arguments, or the error raised."""
    adapter = app.create_url_adapter(app.request_class(env))
    try:
        rule, arguments = adapter.match(return_rule=True)
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return type(exc), getattr(exc, "new_url", None), getattr(exc, "valid_methods", None)
    return rule.endpoint, rule.rule, arguments


def test_matches_are_werkzeugs_own_when_made_and_when_kept():
    ours, flask = with_view_routes(ServiceFlask(__name__)), with_view_routes(Flask(__name__))
    for _ in range(3):  # the first binds the Host, the second matches, the third reuses the kept matches
        for name, change in MATCHES.items():
            for query in ({}, {"QUERY_STRING": "a=1"}):
                assert matched(ours, environ(change, query)) == matched(flask, environ(change, query)), name


def test_kept_matches_follow_the_maps_settings_and_give_each_request_its_own_arguments():
    ours, flask = with_view_routes(ServiceFlask(__name__)), with_view_routes(Flask(__name__))
    file = environ(MATCHES["file"])
    for app in (ours, flask):
        matched(app, file)
    arguments = ours.create_url_adapter(ours.request_class(file)).match(return_rule=True)[1]
    arguments["name"] = "changed"
    assert matched(ours, file) == matched(flask, file) == ("file", "/files/<path:name>", {"name": "a/b.txt"})
    default_page = environ(MATCHES["default page (redirect)"])
    for redirect_defaults in (False, True, False):
        for app in (ours, flask):
            app.url_map.redirect_defaults = redirect_defaults
        assert matched(ours, default_page) == matched(flask, default_page)


def test_kept_matches_stay_bounded_against_many_paths():
    app = with_view_routes(ServiceFlask(__name__))
    for number in range(3 * MAX_KEPT_MATCHES):
        assert matched(app, environ({"REQUEST_METHOD": "GET", "PATH_INFO": f"/items/{number}"}))[2] == {
            "number": number}
    assert all(len(bound.matches) <= MAX_KEPT_MATCHES for bound in app.bound_hosts.values())


class FakeService:
    model_name = "fake"

    def inference(self, data):
        return {"predicted_label": "7"}


def test_service_app_binds_its_host_once_and_still_routes_every_request():
    app = create_app(FakeService(), ServeConfig())
    client = app.test_client()
    for _ in range(3):
        assert client.post("/", data={"images": (b"x", "1.png")}).json == {"predicted_label": "7"}
    assert client.get("/ui").status_code == 308  # werkzeug's slash redirect still made per request
    assert client.get("/nowhere").status_code == 404
    assert len(app.bound_hosts) == 1


class RunsCoroutines(ServiceFlask):
    """ServiceFlask with its own async_to_sync (Flask's needs the asgiref extra)."""

    def async_to_sync(self, func):
        def run(*args, **kwargs):
            # On a thread of its own: another test may have left an event loop running on this one.
            answers = []
            runner = threading.Thread(target=lambda: answers.append(asyncio.run(func(*args, **kwargs))))
            runner.start()
            runner.join()
            return answers[0]

        return run


def test_async_views_still_run_and_sync_ones_are_left_as_they_are():
    app = RunsCoroutines(__name__)

    async def slow_view() -> str:
        return "async"

    def view() -> str:
        return "sync"

    wrapped = app.ensure_sync(slow_view)
    assert wrapped is not slow_view and wrapped() == "async" and app.ensure_sync(slow_view) is wrapped
    assert app.ensure_sync(view) is view


def test_ensure_sync_stays_bounded_against_fresh_functions():
    app = ServiceFlask(__name__)
    for index in range(MAX_SYNC_FUNCTIONS * 3):
        app.ensure_sync(lambda index=index: index)
    assert len(app.sync_functions) <= MAX_SYNC_FUNCTIONS


def test_requests_share_one_null_session_that_refuses_changes():
    app = ServiceFlask(__name__)
    sessions = []

    @app.get("/s")
    def read_session() -> str:
        sessions.append(session._get_current_object())
        with pytest.raises(RuntimeError, match="no secret key"):
            session["user"] = "x"
        return str(session.get("user"))

    client = app.test_client()
    assert [client.get("/s").text for _ in range(2)] == ["None", "None"]
    assert sessions[0] is sessions[1] and dict(sessions[0]) == {}


def test_with_a_secret_key_sessions_are_flasks_own():
    app = ServiceFlask(__name__)
    app.secret_key = "test"

    @app.get("/count")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    client = app.test_client()
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
