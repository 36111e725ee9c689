"""The service's Flask: work Flask repeats alike for every request, done once.

- The host half of the URL adapter is bound once per Host (below), and the matches of a Host's
  paths are kept with it (KeptMatchAdapter).
- ensure_sync is decided once per view or hook (it inspected each one on every request).
- While there is no secret key, requests share one null session (SharedNullSessions).
- Answers are responses.ServiceResponse, JSON encoded by responses.ServiceJSONProvider.

For every request Flask binds its URL map to the request's environ: werkzeug's get_host twice
(Host header checks, trusted hosts), the Upgrade test and the IDNA encoding of the Host name,
~6 us of the ~10 us a request context costs. What that work yields (server name, subdomain,
scheme, script root) depends only on the environ values in HOST_KEYS and the app's routing
settings, so it is kept per distinct set of them; each request only adds its own path, method
and query, decoded as werkzeug decodes them. A bind that fails (an untrusted or unencodable
Host) is never kept: such a request takes Flask's own path and gets its error. request.host,
which Flask computes up front, is left to werkzeug's lazy property: the same value, when read.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable

from flask import Flask, Request
from flask.sessions import NullSession, SecureCookieSessionInterface
from werkzeug.routing import MapAdapter

from .responses import ServiceJSONProvider, ServiceResponse

# The environ values Map.bind_to_environ reads besides PATH_INFO, QUERY_STRING and REQUEST_METHOD.
HOST_KEYS = ("HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme", "SCRIPT_NAME",
             "HTTP_CONNECTION", "HTTP_UPGRADE")
MAX_BOUND_HOSTS = 64  # Host headers are the client's: past this many, the kept binds are dropped
MAX_SYNC_FUNCTIONS = 256  # views and hooks are registered once; a caller passing fresh functions only empties it
MAX_KEPT_MATCHES = 256  # per bound Host: paths are the client's, so past this many the kept matches are dropped


class BoundHost:
    """What binding the URL map to one Host yields: the adapter's host half, and the matches made under it."""

    __slots__ = ("server_name", "script_name", "subdomain", "url_scheme", "matches")

    def __init__(self, adapter: MapAdapter):
        self.server_name, self.script_name = adapter.server_name, adapter.script_name
        self.subdomain, self.url_scheme = adapter.subdomain, adapter.url_scheme
        self.matches: dict[Hashable, tuple[Any, dict[str, Any]]] = {}


class KeptMatchAdapter(MapAdapter):
    """A MapAdapter whose successful matches of a request's own path and method are kept on its BoundHost.

    Matching walks werkzeug's state machine (~3% of a request's CPU); its result depends only on
    the host half (the BoundHost), the path, the method and the map's redirect_defaults (rules take
    the map's other settings when added), as Flask does not let rules change once requests are
    served. Only a match is kept: redirects, 404s and 405s are raised afresh by werkzeug each time.
    Each caller gets its own copy of the view arguments.
    """

    def __init__(self, bound: BoundHost, *args: Any):
        super().__init__(*args)
        self.kept = bound.matches

    def match(self, path_info: str | None = None, method: str | None = None, return_rule: bool = False,
              query_args: Any = None, websocket: bool | None = None) -> tuple[Any, Any]:
        if path_info is not None or method is not None or websocket is not None or not return_rule:
            return super().match(path_info, method, return_rule, query_args, websocket)
        key = (self.path_info, self.default_method, self.map.redirect_defaults)  # the one setting match reads
        kept = self.kept.get(key)
        if kept is None:
            rule, arguments = super().match(return_rule=True)
            if len(self.kept) >= MAX_KEPT_MATCHES:
                self.kept.clear()
            kept = self.kept[key] = rule, dict(arguments)
        return kept[0], dict(kept[1])


class ServiceFlask(Flask):
    """The service's Flask: URL adapters reuse the host part bound for an earlier request like this one."""

    response_class = ServiceResponse
    json_provider_class = ServiceJSONProvider

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.bound_hosts: dict[Hashable, BoundHost] = {}
        self.sync_functions: dict[Callable, Callable] = {}
        self.session_interface = SharedNullSessions()

    def ensure_sync(self, func: Callable) -> Callable:
        """Flask's ensure_sync, decided once per function: it inspects each hook and the view on every request."""
        try:
            return self.sync_functions[func]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable
            return super().ensure_sync(func)
        if len(self.sync_functions) >= MAX_SYNC_FUNCTIONS:
            self.sync_functions.clear()
        sync = self.sync_functions[func] = super().ensure_sync(func)
        return sync

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        """Flask's adapter for request; the host part comes from bound_hosts when already bound."""
        if request is None:
            return super().create_url_adapter(request)
        if (trusted := self.config["TRUSTED_HOSTS"]) is not None:  # as Flask's own: the request checks these
            request.trusted_hosts = trusted
        environ = request.environ
        key = self.host_key(request)
        bound = self.bound_hosts.get(key)
        if bound is None:
            adapter = super().create_url_adapter(request)
            if len(self.bound_hosts) >= MAX_BOUND_HOSTS:
                self.bound_hosts.clear()
            self.bound_hosts[key] = BoundHost(adapter)  # type: ignore[arg-type]
            return adapter
        query = environ.get("QUERY_STRING")
        return KeptMatchAdapter(bound, self.url_map, bound.server_name, bound.script_name, bound.subdomain,
                                bound.url_scheme, decode_wsgi(environ.get("PATH_INFO", "/")),
                                environ["REQUEST_METHOD"], None if query is None else decode_wsgi(query))

    def host_key(self, request: Request) -> Hashable:
        """Everything besides path, method and query that decides the adapter (or Flask's refusal of the Host)."""
        url_map, trusted = self.url_map, request.trusted_hosts
        if trusted is not None and not isinstance(trusted, str):
            trusted = tuple(trusted)
        return (*map(request.environ.get, HOST_KEYS), self.config["SERVER_NAME"], trusted,
                url_map.host_matching, url_map.default_subdomain, self.subdomain_matching)


class SharedNullSessions(SecureCookieSessionInterface):
    """Flask's cookie sessions; while the app has no secret key, every request shares one null session.

    The service keeps no sessions, and Flask built a NullSession (a callback dict) for each request:
    ~2% of a request's CPU. A null session refuses every change, so one serves them all; with a
    secret key, sessions are Flask's own.
    """

    def __init__(self) -> None:
        self.null = self.null_session_class()

    def make_null_session(self, app: Flask) -> NullSession:
        return self.null


def decode_wsgi(value: str | None) -> str | None:
    """A WSGI string (bytes as latin-1) as the UTF-8 text werkzeug's routing matches against."""
    if value is None or value.isascii():
        return value
    return value.encode("latin-1").decode(errors="replace")
