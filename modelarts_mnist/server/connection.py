"""One HTTP/1.1 connection of the service's edge: head, admission, body, the WSGI app, the answer.

Each connection moves through phases, each with a deadline the edge's sweeper enforces:

    IDLE (keep-alive, idle_seconds) -> HEAD (head_seconds in total from its first byte)
    -> admission (the app's rule, on the head alone) -> BODY (body_idle_seconds between bytes,
    body_seconds in total) -> RUNNING (the app in a pool thread, app_seconds) -> IDLE or closed.

The pool thread writes a keep-alive answer to the socket itself when nothing else is queued for
it, and leaves the rest (the phase, the log, the next request) to the loop's next wake-up: waking
the loop for every answer cost ~0.15 ms of CPU per request on 2 cores (Edge.call, Edge.collect).

A refused request is answered at once, in the same JSON shape as the app's errors, and the
connection is half-closed and drained briefly (LINGER) so the answer is not lost to a reset.
"""
from __future__ import annotations

import asyncio
import ctypes
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote_to_bytes

from ..errors import InferenceFailed, MalformedHttp, MnistSdkError, PayloadTooLarge, RequestOverBudget
from .admission import ADMITTED_KEY
from .errors import DETAIL_HEADER, one_line
from .headers import SECURITY_HEADERS

if TYPE_CHECKING:
    from .edge import Edge

logger = logging.getLogger(__name__)
access_log = logging.getLogger("modelarts_mnist.server.access")

REQUEST_LINE_LIMIT = 8190  # bytes; a longer request line is a 414 (gunicorn's and nginx's order of size)
HEAD_LIMIT = 32 * 1024  # request line and header fields together; more is a 431
FIELD_LIMIT = 8190  # one header field
FIELD_COUNT_LIMIT = 100
CHUNK_LINE_LIMIT = 1024
CHUNK_COUNT_LIMIT = 100_000  # a 12 MB body in chunks of 120 bytes on average; each costs a loop turn
PIPELINE_LIMIT = 64 * 1024  # bytes read ahead while a request runs; past it reading pauses  # a chunk-size line with its extensions
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than tab
VERSION = re.compile(r"HTTP/\d\.\d")
NO_BODY_STATUSES = ("1", "204", "304")

IDLE, HEAD, BODY, RUNNING, LINGER, CLOSED = "idle", "head", "body", "running", "linger", "closed"


@dataclass(frozen=True)
class EdgeLimits:
    """How long each phase of a connection may last, and how many connections a process keeps."""

    app_seconds: float  # the time budget of one app call (ServeConfig.time_budget_seconds)
    idle_seconds: float = 5.0  # keep-alive: silence allowed between requests
    head_seconds: float = 10.0  # request line and headers, in total: trickling bytes does not extend it
    body_idle_seconds: float = 10.0  # silence allowed between body bytes
    body_seconds: float = 40.0  # a whole body (ModelArts' gateway allows 40 s per request)
    linger_seconds: float = 2.0  # after a refusal: unread input is drained this long, then dropped
    max_connections: int = 1000  # per process; past it the oldest idle or stalled connection is closed
    buffered_bytes: int = 128 * 1024 * 1024  # requests still arriving, per process; past it the slowest is cut


class Connection(asyncio.Protocol):
    """The state of one client connection; the edge owns the app, the pool and the sweeper."""

    def __init__(self, edge: Edge):
        self.edge = edge
        self.transport: Any = None
        self.buffer = bytearray()
        self.phase = IDLE
        self.deadline = edge.now() + edge.limits.idle_seconds
        self.scanned = 0  # bytes of the buffer already searched for the end of the head
        self.serial = 0  # which request an app call answers (a late one after a 504 is dropped)
        self.environ: dict[str, Any] = {}
        self.keep_alive = True
        self.body: BodyReader | None = None
        self.body_deadline = 0.0
        self.peer_done = False
        self.counted = 0  # bytes of this request read so far (the edge caps their sum over connections)
        self.gone = False  # the client closed while the app was running
        self.unread = False  # our answers wait in the write buffer: the client is not reading them
        self.paused = False  # reading paused: a client pipelining more than PIPELINE_LIMIT while answered
        # A pool thread writing an answer holds the lock; the loop takes it before it changes what
        # the thread checks (serial, gone, the descriptor). written: the serial answered that way.
        self.lock = threading.Lock()
        self.written = 0
        self.fd = -1  # our duplicate of the socket's descriptor (see connection_made)

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        # A duplicate, so the number a pool thread writes to can never name another client's socket:
        # some loops (uvloop) close their descriptor before connection_lost runs, and it is reused.
        self.fd = os.dup(sock.fileno()) if sock is not None else -1
        self.edge.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.collect()  # an answer a pool thread already wrote moves the phase on first
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            self.gone = self.phase == RUNNING
        self.release()
        if self.phase == RUNNING:
            return  # still watched: its app call may yet run past the budget
        self.phase = CLOSED
        self.edge.closed(self)

    def data_received(self, data: bytes) -> None:
        if self.phase == RUNNING:
            with self.lock:  # a pool thread answering now either sees these bytes or has recorded its answer
                answered = self.written == self.serial
                if not answered:
                    self.buffer += data  # pipelined: read once this answer is written
            if not answered:
                if len(self.buffer) > PIPELINE_LIMIT and not self.paused:
                    self.paused = True
                    self.transport.pause_reading()
                return
            self.edge.collect()  # the answer a pool thread wrote: these bytes are the next request
        if self.phase in (IDLE, HEAD, BODY):
            self.buffer += data
            self.counted += len(data)
            self.edge.buffered += len(data)
            self.advance()
            if self.edge.buffered > self.edge.limits.buffered_bytes:
                self.edge.shed(self)

    def eof_received(self) -> bool:
        self.edge.collect()
        self.peer_done = True
        if self.phase == HEAD or (self.phase == BODY):
            self.refuse(MalformedHttp("request cut short: the client closed before sending all of it"))
        elif self.phase != RUNNING:
            self.close()
        return True  # keep our side open: an answer may still be on its way

    # ---------------------------------------------------------------- phases

    def advance(self) -> None:
        """Move through the phases as far as the buffered bytes allow."""
        try:
            if self.phase == IDLE:
                if not self.start_head():
                    return
            if self.phase == HEAD and not self.read_head():
                return
            if self.phase == BODY and not self.read_body():
                return
        except MnistSdkError as error:
            self.refuse(error)
            return
        except Exception as exc:  # a fault of ours: still one JSON answer, and the loop goes on
            logger.error("the edge failed on %s", self.request_line(), exc_info=exc)
            self.refuse(InferenceFailed("internal server error; see the service log"))
            return
        self.run_app()

    def start_head(self) -> bool:
        """Leave IDLE on the first byte of a request (blank lines before it are ignored, as RFC 9112 allows)."""
        while self.buffer[:2] == b"\r\n":
            del self.buffer[:2]
        if not self.buffer or self.buffer == b"\r":
            return False
        self.phase, self.scanned = HEAD, 0
        self.deadline = self.edge.now() + self.edge.limits.head_seconds
        return True

    def read_head(self) -> bool:
        """Parse the head once complete, admit it, and set up the body; False while more is needed."""
        end = self.buffer.find(b"\r\n\r\n", max(0, self.scanned - 3))
        if end < 0:
            self.scanned = len(self.buffer)
            check_partial_head(self.buffer)
            return False
        if end > HEAD_LIMIT:
            raise too_large_head()
        head = bytes(self.buffer[:end])
        del self.buffer[:end + 4]
        method, target, version, fields = parse_head(head)
        edge = self.edge
        environ = self.environ = make_environ(method, target, version, fields, edge.server_address, self.peer())
        self.keep_alive = wants_keep_alive(version, environ.get("HTTP_CONNECTION", ""))
        chunked, length = body_framing(environ)
        limit = edge.admit(environ)  # Host, declared size and token: refused before any body byte is read
        if length > limit:
            raise PayloadTooLarge("Request entity too large")
        if (chunked or length) and environ.get("HTTP_EXPECT", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.body = BodyReader(chunked, length, limit)
        self.phase = BODY
        now = edge.now()
        self.body_deadline = now + edge.limits.body_seconds
        self.deadline = min(now + edge.limits.body_idle_seconds, self.body_deadline)
        return True

    def read_body(self) -> bool:
        """Take the body from the buffer once complete; False while more is needed (deadlines move on)."""
        assert self.body is not None
        body = self.body.take(self.buffer)
        if body is None:
            self.deadline = min(self.edge.now() + self.edge.limits.body_idle_seconds, self.body_deadline)
            return False
        environ = self.environ
        environ["wsgi.input"] = io.BytesIO(body)
        if self.body.chunked:
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["CONTENT_LENGTH"] = str(len(body))
        self.body = None
        return True

    def run_app(self) -> None:
        """Hand the request to a pool thread; the loop goes on serving other connections."""
        self.phase = RUNNING
        self.release()
        self.serial += 1
        self.deadline = self.edge.now() + self.edge.limits.app_seconds
        self.edge.submit(self, self.serial, self.environ, self.keep_alive and not self.edge.draining)

    def write_now(self, serial: int, payload: bytes) -> int:
        """On a pool thread: write payload to the socket if nothing else is queued for it; bytes written.

        Called with self.lock held. 0 leaves the whole answer to the loop: a request answered 504
        already, a client gone, a request pipelined behind this one (the loop must start it now),
        or an earlier answer still buffered.
        """
        if (serial != self.serial or self.phase != RUNNING or self.gone or self.peer_done or self.fd < 0
                or self.buffer or self.transport.get_write_buffer_size()):
            return 0
        if self.edge.running > 1:  # other requests have Python work: let them run while the kernel sends
            try:
                sent = os.write(self.fd, payload)
            except OSError:
                sent = 0
        else:
            sent = send_holding_gil(self.fd, payload)
        if sent > 0:  # else it would block, or the client is gone: the loop's transport handles both
            self.written = serial
        return max(sent, 0)

    def answered(self, serial: int, payload: bytes, keep_alive: bool, sent: int = 0) -> None:
        """Write the app's answer (called on the loop), its first `sent` bytes already written; then the next request, or close."""
        if serial != self.serial or self.phase != RUNNING:
            return  # answered already (504)
        if self.gone:
            self.forget()
            return
        if sent < len(payload):
            self.transport.write(payload[sent:] if sent else payload)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info('%s "%s" %s %d', self.peer()[0], self.request_line(), payload[9:12].decode(), len(payload))
        if not keep_alive or self.peer_done or self.edge.draining:
            self.close()
            return
        self.phase, self.environ = IDLE, {}
        self.deadline = self.edge.now() + self.edge.limits.idle_seconds
        if not self.unread:  # else the next request waits until the client reads this answer
            self.next_request()

    def next_request(self) -> None:
        """Read again, and serve a request already pipelined."""
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.buffer:
            self.advance()

    def pause_writing(self) -> None:
        """Answers pile up unread (asyncio's high-water mark): read no more requests until the client reads."""
        self.unread = True
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.unread = False
        if self.phase == IDLE:
            self.next_request()

    # ---------------------------------------------------------------- endings

    def expire(self) -> None:
        """The phase's deadline passed (called by the edge's sweeper)."""
        phase = self.phase
        if phase == HEAD:
            self.refuse(MalformedHttp("request head not received in time", http_status=408))
        elif phase == BODY:
            self.refuse(MalformedHttp("request body not received in time", http_status=408))
        elif phase == RUNNING:
            with self.lock:
                if self.written == self.serial:
                    return  # a pool thread has just written the answer: edge.collect moves on
                self.serial += 1  # the app's late answer is dropped
            self.edge.running -= 1  # no longer waited for
            self.edge.overrun()
            if self.gone:
                self.forget()
                return
            self.refuse(RequestOverBudget(f"the model did not answer within {self.edge.limits.app_seconds:g} s"))
        elif phase == LINGER or self.unread:  # closing would wait for a client that does not read
            self.transport.abort()
        else:
            self.close()

    def refuse(self, error: MnistSdkError) -> None:
        """Answer error as JSON, stop reading requests, drain what the client still sends for a while."""
        if self.phase in (LINGER, CLOSED):
            return
        if access_log.isEnabledFor(logging.INFO):
            access_log.info('%s "%s" %d (refused: %s)', self.peer()[0], self.request_line(),
                            error.http_status, one_line(error.message))
        self.phase, self.buffer = LINGER, bytearray()
        self.release()
        self.deadline = self.edge.now() + self.edge.limits.linger_seconds
        try:
            self.transport.write(render_error(error, keep_alive=False))
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except OSError:  # the client is gone already
            self.transport.abort()
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.peer_done:
            self.transport.close()

    def forget(self) -> None:
        """The client left while the app ran; now that the call is over, drop the connection."""
        self.phase = CLOSED
        self.edge.closed(self)

    def release(self) -> None:
        """The bytes read for the current request no longer count toward the process's buffered total."""
        self.edge.buffered -= self.counted
        self.counted = 0

    def close(self) -> None:
        """Close now (whatever is buffered for writing still goes out)."""
        if self.phase != CLOSED:
            self.phase = CLOSED
            self.transport.close()

    def peer(self) -> tuple[str, int]:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return (str(peer[0]), int(peer[1])) if peer else ("", 0)

    def request_line(self) -> str:
        environ = self.environ
        return one_line(f"{environ.get('REQUEST_METHOD', '-')} {environ.get('RAW_URI', '')}", limit=200)


class BodyReader:
    """Takes a body off the connection's buffer: Content-Length bytes, or chunks decoded up to limit."""

    def __init__(self, chunked: bool, length: int, limit: int):
        self.chunked, self.length, self.limit = chunked, length, limit
        self.data = bytearray()
        self.size = 0  # bytes on the wire, chunk framing included: tiny chunks cannot multiply the cost
        self.chunks = 0
        self.chunk_left = -1  # chunked: bytes left in the current chunk; -1 before a size line
        self.trailer = False

    def take(self, buffer: bytearray) -> bytes | None:
        """The whole body once buffered (removed from buffer), else None; MalformedHttp/PayloadTooLarge."""
        if not self.chunked:
            if len(buffer) < self.length:
                return None
            body = bytes(buffer[:self.length])
            del buffer[:self.length]
            return body
        while True:
            if self.trailer:
                if not self.skip_trailer(buffer):
                    return None
                return bytes(self.data)
            if self.chunk_left < 0:
                if not self.read_size(buffer):
                    return None
            elif self.chunk_left > 0:
                piece = buffer[:self.chunk_left]
                del buffer[:len(piece)]
                self.data += piece
                self.chunk_left -= len(piece)
                if self.chunk_left:
                    return None
            if self.chunk_left == 0 and not self.trailer:
                if len(buffer) < 2:
                    return None
                if buffer[:2] != b"\r\n":
                    raise MalformedHttp("malformed chunked body: a chunk does not end with CRLF")
                del buffer[:2]
                self.chunk_left = -1

    def read_size(self, buffer: bytearray) -> bool:
        """Read one chunk-size line; the last chunk (0) moves on to the trailer."""
        end = buffer.find(b"\r\n", 0, CHUNK_LINE_LIMIT + 2)
        if end < 0:
            if len(buffer) > CHUNK_LINE_LIMIT:
                raise MalformedHttp("malformed chunked body: chunk-size line too long")
            return False
        size_text = bytes(buffer[:end]).split(b";", 1)[0].strip(b" \t")
        if not size_text or len(size_text) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
            raise MalformedHttp(f"malformed chunked body: bad chunk size {size_text[:20]!r}")
        del buffer[:end + 2]
        size = int(size_text, 16)
        self.count(end + 2)
        if size == 0:
            self.trailer = True
            return True
        self.chunks += 1
        if self.chunks > CHUNK_COUNT_LIMIT:
            raise MalformedHttp(f"chunked body in more than {CHUNK_COUNT_LIMIT} chunks")
        self.count(size + 2)
        self.chunk_left = size
        return True

    def count(self, size: int) -> None:
        """Add size bytes to the body's total; PayloadTooLarge past the limit, before they arrive."""
        self.size += size
        if self.size > self.limit:
            raise PayloadTooLarge("Request entity too large")

    def skip_trailer(self, buffer: bytearray) -> bool:
        """Drop trailer fields up to the empty line; True once it is read."""
        while True:
            end = buffer.find(b"\r\n", 0, FIELD_LIMIT + 2)
            if end < 0:
                if len(buffer) > FIELD_LIMIT:
                    raise MalformedHttp("malformed chunked body: trailer line too long", http_status=431)
                return False
            del buffer[:end + 2]
            self.count(end + 2)
            if end == 0:
                return True


# ---------------------------------------------------------------- parsing (pure)


def check_partial_head(buffer: bytearray) -> None:
    """400 on a bare LF, 414/431 as soon as an incomplete head is already over its limits."""
    newline = buffer.find(b"\n")
    if newline == 0 or (newline > 0 and buffer[newline - 1] != 13):  # 13: CR
        raise MalformedHttp("request lines must end with CRLF, not a bare LF")
    line_end = buffer.find(b"\r\n")
    if (line_end < 0 and len(buffer) > REQUEST_LINE_LIMIT) or line_end > REQUEST_LINE_LIMIT:
        raise MalformedHttp(f"request line longer than {REQUEST_LINE_LIMIT} bytes", http_status=414)
    if len(buffer) > HEAD_LIMIT:
        raise too_large_head()


def too_large_head() -> MalformedHttp:
    return MalformedHttp(f"request header fields larger than {HEAD_LIMIT} bytes in all", http_status=431)


def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Method, target, version and header fields of a request head (CRLF line ends, no folding)."""
    lines = head.decode("latin-1").split("\r\n")
    line = lines[0]
    if len(line) > REQUEST_LINE_LIMIT:
        raise MalformedHttp(f"request line longer than {REQUEST_LINE_LIMIT} bytes", http_status=414)
    parts = line.split(" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[1] or BAD_VALUE.search(line):
        raise MalformedHttp(f"malformed request line {one_line(line, limit=80)!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if VERSION.fullmatch(version):
            raise MalformedHttp(f"HTTP version {version} is not supported (HTTP/1.1 is)", http_status=505)
        raise MalformedHttp(f"malformed HTTP version {one_line(version, limit=40)!r}")
    if len(lines) - 1 > FIELD_COUNT_LIMIT:
        raise MalformedHttp(f"more than {FIELD_COUNT_LIMIT} header fields", http_status=431)
    fields = []
    for text in lines[1:]:
        if len(text) > FIELD_LIMIT:
            raise MalformedHttp(f"a header field is longer than {FIELD_LIMIT} bytes", http_status=431)
        name, colon, value = text.partition(":")
        if not colon or not TOKEN.fullmatch(name):
            raise MalformedHttp(f"malformed header field {one_line(text, limit=80)!r}")
        value = value.strip(" \t")
        if BAD_VALUE.search(value):
            raise MalformedHttp(f"header {name} holds a control character")
        fields.append((name, value))
    return method, target, version, fields


def make_environ(method: str, target: str, version: str, fields: list[tuple[str, str]],
                 server: tuple[str, int], peer: tuple[str, int]) -> dict[str, Any]:
    """The WSGI environ of a request (PEP 3333), without wsgi.input."""
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        path = origin_path(method, path)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1") if "%" in path else path,
        "QUERY_STRING": query, "RAW_URI": target, "REQUEST_URI": target, "SERVER_PROTOCOL": version,
        "SERVER_NAME": server[0], "SERVER_PORT": str(server[1]),
        "REMOTE_ADDR": peer[0], "REMOTE_PORT": str(peer[1]),
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
        ADMITTED_KEY: True,
    }
    for name, value in fields:
        if "_" in name:
            continue  # as gunicorn and nginx: X_Auth_Token must not pose as X-Auth-Token
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        if key in environ:
            if key in ("CONTENT_LENGTH", "HTTP_HOST", "CONTENT_TYPE", "HTTP_X_AUTH_TOKEN"):
                if environ[key] != value or key != "CONTENT_LENGTH":
                    raise MalformedHttp(f"header {name} given more than once")
                continue
            value = f"{environ[key]},{value}"
        environ[key] = value
    return environ


def origin_path(method: str, target: str) -> str:
    """The path of an absolute-form target (http://host/path), '*' for OPTIONS; 400 otherwise."""
    lowered = target.lower()
    if lowered.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    if target == "*" and method == "OPTIONS":
        return "*"
    raise MalformedHttp(f"malformed request target {one_line(target, limit=80)!r}")


def body_framing(environ: dict[str, Any]) -> tuple[bool, int]:
    """(chunked, Content-Length) of the request; 400 on conflicting framing, 501 on other transfer codings."""
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    declared = environ.get("CONTENT_LENGTH")
    if coding is not None:
        if declared is not None:
            raise MalformedHttp("both Transfer-Encoding and Content-Length given")
        if coding.strip().lower() != "chunked" or environ["SERVER_PROTOCOL"] == "HTTP/1.0":
            raise MalformedHttp(f"Transfer-Encoding {one_line(coding, limit=60)!r} is not supported "
                                f"(only chunked, on HTTP/1.1)", http_status=501)
        return True, 0
    if declared is None or declared == "":
        return False, 0
    if not (declared.isdigit() and declared.isascii()) or len(declared) > 18:
        raise MalformedHttp(f"Content-Length must be a number of bytes, got {one_line(declared, limit=40)!r}")
    return False, int(declared)


def wants_keep_alive(version: str, connection: str) -> bool:
    """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only when asked."""
    tokens = connection.lower()
    if version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


# ---------------------------------------------------------------- answers (pure)


_LIBC = ctypes.PyDLL(None, use_errno=True)  # PyDLL: its calls keep the GIL
_SEND = _LIBC.send
_SEND.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
_SEND.restype = ctypes.c_ssize_t
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)


def send_holding_gil(fd: int, payload: bytes) -> int:
    """send(2) on a non-blocking socket without releasing the GIL: bytes sent, or -1.

    With os.write, which releases the GIL, the loop, woken by the client's next request, took the
    GIL and then waited for the writing thread's lock: six futex calls and two context switches
    per request at one connection (with more, letting other threads run during the send pays).
    """
    return _SEND(fd, payload, len(payload), _SEND_FLAGS)


def call_app(app: Callable, environ: dict[str, Any], keep_alive: bool) -> tuple[bytes, bool]:
    """Run the WSGI app to the end (in a pool thread): the whole answer as bytes, and keep-alive."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return written.append

    written: list[bytes] = []
    try:
        result = app(environ, start_response)
        try:
            body = b"".join([*written, *result])
        finally:
            if hasattr(result, "close"):
                result.close()
        return render_answer(started[0], started[1], body, keep_alive, environ["REQUEST_METHOD"] == "HEAD",
                             http10=environ["SERVER_PROTOCOL"] == "HTTP/1.0")
    except Exception as exc:  # the app failed outside its own error handlers: still one JSON answer
        logger.error("the app failed to answer %s %s", environ.get("REQUEST_METHOD"),
                     one_line(environ.get("RAW_URI", ""), limit=200), exc_info=exc)
        return render_error(InferenceFailed("internal server error; see the service log"), keep_alive=False), False


def render_answer(status: str, headers: list[tuple[str, str]], body: bytes, keep_alive: bool,
                  head_only: bool = False, http10: bool = False) -> tuple[bytes, bool]:
    """Status line, headers (Content-Length and Connection ours) and body as sent; and whether to keep alive."""
    lines = [f"HTTP/1.1 {status}\r\n"]
    for name, value in headers:
        lowered = name.lower()
        if lowered in ("content-length", "transfer-encoding", "connection"):
            keep_alive = keep_alive and not (lowered == "connection" and "close" in value.lower())
            continue
        lines.append(header_line(name, value))
    if not status.startswith(NO_BODY_STATUSES):
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append(http_date())
    if keep_alive:  # HTTP/1.0 clients keep the connection only when told so
        lines.append("Connection: keep-alive\r\n\r\n" if http10 else "\r\n")
    else:
        lines.append("Connection: close\r\n\r\n")
    return "".join(lines).encode("latin-1") + (b"" if head_only else body), keep_alive


def header_line(name: str, value: str) -> str:
    """`name: value` and CRLF, checked for control characters; the lines of recent answers are kept.

    Most answers carry the same few headers (the security headers, Content-Type): two regex
    searches and a format each were ~1% of a request's CPU.
    """
    try:
        return _header_lines[name, value]
    except KeyError:
        pass
    if BAD_VALUE.search(value) or BAD_VALUE.search(name):
        raise ValueError(f"response header {name!r} holds a control character")
    if len(_header_lines) >= HEADER_LINES_KEPT:  # values such as error details vary: never let them pile up
        _header_lines.clear()
    line = _header_lines[name, value] = f"{name}: {value}\r\n"
    return line


def render_error(error: MnistSdkError, *, keep_alive: bool) -> bytes:
    """An SDK error as the app answers it: its JSON body, its status, its message in X-Error-Detail."""
    body = json.dumps(error.to_dict(), ensure_ascii=False).encode("utf-8")
    status = f"{error.http_status} {STATUS_PHRASES.get(error.http_status, 'Error')}"
    headers = [("Content-Type", "application/json"), (DETAIL_HEADER, one_line(error.message)), *SECURITY_HEADERS]
    return render_answer(status, headers, body, keep_alive)[0]


STATUS_PHRASES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
                  431: "Request Header Fields Too Large", 500: "Internal Server Error",
                  501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout",
                  505: "HTTP Version Not Supported"}

_date_cache = [0, ""]
HEADER_LINES_KEPT = 256
_header_lines: dict[tuple[str, str], str] = {}  # (name, value) -> its checked line; pool threads share it


def http_date() -> str:
    """The Date header line, formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, f"Date: {formatdate(now, usegmt=True)}\r\n"]
    return _date_cache[1]
