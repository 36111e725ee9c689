"""Whether a request may be served at all, decided from its head alone (before any body byte is read)."""
from __future__ import annotations

import ipaddress
from typing import Any, Mapping

from ..errors import HostNotAllowed, MalformedHttp, PayloadTooLarge
from .auth import check_environ_token
from .errors import TOO_LARGE

# Set by the HTTP edge once it has admitted a request, so the app does not check it twice
# (HTTP clients cannot set environ keys: their headers all arrive as HTTP_*).
ADMITTED_KEY = "modelarts_mnist.admitted"
LOOPBACK_NAMES = ("localhost", "localhost.")


class Admission:
    """The service's admission rule: Host (loopback-bound only), declared size, then X-Auth-Token on POST."""

    def __init__(self, max_body_bytes: int, token: str | None = None, loopback_only: bool = False):
        self.limit = max_body_bytes
        self.token = token.encode("utf-8") if token else None
        self.loopback_only = loopback_only

    def __call__(self, environ: Mapping[str, Any]) -> int:
        """The body size this request may have; raises the MnistSdkError that refuses it."""
        if self.loopback_only:
            check_host(environ.get("HTTP_HOST"))
        check_declared_length(environ.get("CONTENT_LENGTH"), self.limit)
        if self.token is not None and environ.get("REQUEST_METHOD") == "POST":
            check_environ_token(environ, self.token)
        return self.limit


def check_declared_length(declared: str | None, limit: int) -> None:
    """PayloadTooLarge when a Content-Length over limit is declared (nothing is read to find out)."""
    if not declared:
        return
    if not declared.isdigit() or not declared.isascii():
        raise MalformedHttp(f"Content-Length must be a number of bytes, got {declared[:40]!r}")
    if int(declared) > limit:
        raise PayloadTooLarge(TOO_LARGE)


def check_host(host: str | None) -> None:
    """HostNotAllowed unless host names this machine's loopback (a browser sent elsewhere by DNS rebinding)."""
    if host is not None and not is_loopback_name(host):
        raise HostNotAllowed(f"Host {host[:100]!r} is not a loopback name; this service answers only "
                             f"localhost, 127.0.0.1 and [::1] (it is bound to loopback)")


def is_loopback_name(host: str) -> bool:
    """True for localhost (and *.localhost), 127.0.0.0/8 and [::1], with or without a port."""
    name = host.strip().lower()
    if name.startswith("["):
        name, bracket, rest = name[1:].partition("]")
        if not bracket or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return False
    elif name.count(":") == 1:
        name, port = name.split(":")
        if not port.isdigit():
            return False
    if name in LOOPBACK_NAMES or name.endswith((".localhost", ".localhost.")):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_address(host: str) -> bool:
    """True when a bind address only accepts connections from this machine."""
    return is_loopback_name(f"[{host}]" if ":" in host else host)
