"""The service's port: reserved without listening for gunicorn's workers, or listened on by one process."""
from __future__ import annotations

import socket

import pytest

from modelarts_mnist.errors import ServeError
from modelarts_mnist.server.port import bracketed, listening_socket, reserve_port
from test_server_runner import listening_sockets


def test_reserve_port_holds_a_free_port_without_listening():
    with reserve_port("127.0.0.1", 0) as holder:
        port = holder.getsockname()[1]
        assert port and listening_sockets(port) == 0
        with socket.socket() as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))  # other programs are kept off the port


def test_reserve_port_binds_names_like_gunicorn_and_urls_bracket_ipv6():
    with reserve_port("localhost", 0) as holder:
        assert holder.family == socket.AF_INET  # gunicorn binds IPv4 for any name that is not an IPv6 literal
    assert bracketed("::1") == "[::1]" and bracketed("127.0.0.1") == "127.0.0.1"


def test_reserve_port_refuses_a_port_shared_by_another_reuseport_server():
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(ServeError, match="another server is already listening"):
            reserve_port("127.0.0.1", other.getsockname()[1])


def test_listening_socket_listens_and_refuses_a_taken_port():
    with listening_socket("127.0.0.1", 0) as listener:
        port = listener.getsockname()[1]
        assert listening_sockets(port) == 1
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            listening_socket("127.0.0.1", port)
