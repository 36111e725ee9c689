"""Flask with the host half of its URL adapter bound once per Host, not once per request.

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

from typing import Any, Hashable

from flask import Flask, Request
from werkzeug.routing import MapAdapter

from .responses import ServiceJSONProvider, ServiceResponse

# The environ values Map.bind_to_environ reads besides PATH_INFO, QUERY_STRING and REQUEST_METHOD.
HOST_KEYS = ("HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme", "SCRIPT_NAME",
             "HTTP_CONNECTION", "HTTP_UPGRADE")
MAX_BOUND_HOSTS = 64  # Host headers are the client's: past this many, the kept binds are dropped


class BoundHost:
    """What binding the URL map to one Host yields: the adapter's host half."""

    __slots__ = ("server_name", "script_name", "subdomain", "url_scheme")

    def __init__(self, adapter: MapAdapter):
        self.server_name, self.script_name = adapter.server_name, adapter.script_name
        self.subdomain, self.url_scheme = adapter.subdomain, adapter.url_scheme


class ServiceFlask(Flask):
    """The service's Flask: URL adapters reuse the host part bound for an earlier request like this one."""

    response_class = ServiceResponse
    json_provider_class = ServiceJSONProvider

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.bound_hosts: dict[Hashable, BoundHost] = {}

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
        return MapAdapter(self.url_map, bound.server_name, bound.script_name, bound.subdomain, bound.url_scheme,
                          decode_wsgi(environ.get("PATH_INFO", "/")), environ["REQUEST_METHOD"],
                          None if query is None else decode_wsgi(query))

    def host_key(self, request: Request) -> Hashable:
        """Everything besides path, method and query that decides the adapter (or Flask's refusal of the Host)."""
        url_map, trusted = self.url_map, request.trusted_hosts
        if trusted is not None and not isinstance(trusted, str):
            trusted = tuple(trusted)
        return (*map(request.environ.get, HOST_KEYS), self.config["SERVER_NAME"], trusted,
                url_map.host_matching, url_map.default_subdomain, self.subdomain_matching)


def decode_wsgi(value: str | None) -> str | None:
    """A WSGI string (bytes as latin-1) as the UTF-8 text werkzeug's routing matches against."""
    if value is None or value.isascii():
        return value
    return value.encode("latin-1").decode(errors="replace")
