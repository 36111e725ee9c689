"""The service's port: taken before anything slow starts, so a busy port is one clear error at once."""
from __future__ import annotations

import errno
import socket

from ..errors import ServeError

BACKLOG = 2048


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (a free port for 0) with SO_REUSEPORT, never listening.

    Held by gunicorn's master while workers bind their own sockets to the same port, it keeps other
    programs off the port, and gives port 0 one number for all workers. Raises ServeError if
    another server already answers there (SO_REUSEPORT alone would silently share the port).
    """
    holder = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
        if answers(holder.family, holder.getsockname()):
            raise OSError(errno.EADDRINUSE, "port in use: another server is already listening there")
    except OSError as exc:
        holder.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return holder


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on host:port for this process alone; ServeError if the port is taken."""
    listener = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not REUSEPORT: a taken port must fail
        listener.bind((host, port))
        listener.listen(BACKLOG)
    except OSError as exc:
        listener.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return listener


def family_of(host: str) -> int:
    """IPv6 for an IPv6 literal, IPv4 for anything else (as gunicorn decides for its own sockets)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bracketed(host: str) -> str:
    """host as it goes before `:port` in a URL or gunicorn's bind (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def answers(family: int, address: tuple) -> bool:
    """True if something accepts a TCP connection at address (a wildcard host means this machine)."""
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
    target = (wildcard.get(address[0], address[0]), *address[1:])
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex(target) == 0
