"""Frames between a host and a model worker: a 4-byte big-endian length, then a pickle (protocol 4).

Frames carry plain data only (dicts, lists, str, bytes, numbers, None): the reading side refuses
any pickled class, so neither side can make the other run code by what it sends.
"""
import io
import pickle
import socket
import struct
from typing import Any, Union

PROTOCOL = 4  # the newest that Python 3.6 reads
HEADER = struct.Struct(">I")


def send(sock: socket.socket, message: Any) -> None:
    """Write one frame holding message."""
    payload = pickle.dumps(message, protocol=PROTOCOL)
    sock.sendall(HEADER.pack(len(payload)) + payload)


def receive(sock: socket.socket) -> Any:
    """Read one frame; EOFError when the other side closed the connection between frames."""
    size, = HEADER.unpack(read_exactly(sock, HEADER.size))
    return loads_plain(read_exactly(sock, size))


def read_exactly(sock: socket.socket, size: int) -> bytearray:
    """size bytes from sock (EOFError if it closes first)."""
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        count = sock.recv_into(view[done:])
        if not count:
            raise EOFError("connection closed after {} of {} bytes".format(done, size))
        done += count
    return buffer


def loads_plain(payload: Union[bytes, bytearray]) -> Any:
    """Unpickle data made of builtin containers and scalars only."""
    return PlainUnpickler(io.BytesIO(payload)).load()


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that refuses every class: plain data needs none."""

    def find_class(self, module: str, name: str) -> Any:
        """Refuse: a frame naming a class is not plain data."""
        raise pickle.UnpicklingError("refusing {}.{}: frames carry plain data only".format(module, name))
