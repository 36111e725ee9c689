"""How `serve` runs the app: one threaded process by default, or gunicorn with N worker processes."""
from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import signal
import socket
import threading
from dataclasses import replace
from functools import partial
from typing import Any, Callable

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wsgi import ClosingIterator

from ..errors import ServeError
from ..loader import find_service_class
from .app import SLOT_KEY, ServeConfig, create_app
from .loading import preload_tensorflow

logger = logging.getLogger(__name__)
access_log = logging.getLogger("modelarts_mnist.server.access")

GRACE_SECONDS = 30  # SIGTERM: how long in-flight requests may still run
SOCKET_TIMEOUT = 60  # a client silent this long mid-request is dropped (ModelArts' gateway: 40-60 s)
# Measured with benchmarks/serve_bench.py on 2 cores (see benchmarks/README.md). With a socket per worker
# (SO_REUSEPORT) connections spread evenly, and one worker per core did best: at c=32, 2 workers
# used 1.2-1.4 ms of CPU per request against 1.6 ms for 4 (more processes: more cache misses and
# context switches), for 1,390-1,600 req/s against 1,100-1,240. One and two threads per worker were
# within the noise (1,160-1,380 req/s each); with two, a slow request (a 256-image batch, a large
# photo) does not hold up the next one on that worker.
THREADS_PER_WORKER = 2
WORKERS_PER_CORE = 1


def run(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8080, workers: int | None = None,
        on_listening: Callable[[str], None] = lambda url: None) -> None:
    """Serve until SIGTERM/SIGINT: threaded in this process, or under gunicorn when workers is set."""
    config = replace(config, tf_threads=tf_threads_for(workers or 1))
    if workers:
        run_gunicorn(config, host, port, workers, on_listening)
    else:
        run_threaded(config, host, port, on_listening)


def default_workers() -> int:
    """serve's worker count when none is given: WORKERS_PER_CORE for each core this process may use."""
    return WORKERS_PER_CORE * len(os.sched_getaffinity(0))


def tf_threads_for(workers: int) -> int:
    """TensorFlow pool size per process: the cores this process may use, shared among workers."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def run_threaded(config: ServeConfig, host: str, port: int, on_listening: Callable[[str], None]) -> None:
    """One process: listen at once, load the model in the background (/health 503 meanwhile)."""
    app = create_app(config=replace(config, load_in_background=True))
    tracker = InFlight(app)
    try:
        server = make_server(host, port, tracker, threaded=True, request_handler=QuietHandler)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    on_listening(f"http://{bracketed(host)}:{server.server_port}")
    slot = app.extensions[SLOT_KEY]
    while not stop.wait(0.2) and slot.error is None:
        pass
    server.shutdown()  # stop accepting; handler threads already running carry on
    if not tracker.wait_idle(GRACE_SECONDS):
        logger.warning("stopping with %d request(s) still running after %d s", tracker.count, GRACE_SECONDS)
    server.server_close()
    if slot.error is not None:
        raise slot.error


class InFlight:
    """WSGI middleware counting requests still being answered, so shutdown can wait for them."""

    def __init__(self, app: Any):
        self.app = app
        self.count = 0
        self._idle = threading.Condition()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        with self._idle:
            self.count += 1
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return ClosingIterator(body, self._done)  # done once the body is written

    def _done(self) -> None:
        with self._idle:
            self.count -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no request is in flight; False if timeout passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self.count == 0, timeout)


class QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without its per-request INFO line (unless asked) and with a socket timeout."""

    timeout = SOCKET_TIMEOUT

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if access_log.isEnabledFor(logging.INFO):
            access_log.info('%s "%s" %s %s', self.address_string(), self.requestline, code, size)


def run_gunicorn(config: ServeConfig, host: str, port: int, workers: int,
                 on_listening: Callable[[str], None]) -> None:
    """gunicorn with `workers` gthread processes; each loads and warms up the model after fork.

    Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections evenly.
    On one shared socket the first worker to wake took most of a burst of keep-alive connections
    (32 opened at once: 21/7/2/2 over 4 workers), and throughput swung 2x between runs.
    """
    from .gunicorn_app import GunicornService

    if config.engine_python is None:  # else the engine's interpreter loads the code, and this one needs no TF
        find_service_class(config.model_dir)  # a missing or broken service file: one clear error, before forking
        preload_tensorflow(config)
    with reserve_port(host, port) as holder:
        address = f"{bracketed(host)}:{holder.getsockname()[1]}"
        options = {
            "bind": address, "reuse_port": True, "workers": workers, "worker_class": "gthread",
            "threads": THREADS_PER_WORKER, "keepalive": 5, "graceful_timeout": GRACE_SECONDS,
            "timeout": 120,  # loading TensorFlow and the model counts against the worker's heartbeat
            "accesslog": "-" if access_log.isEnabledFor(logging.INFO) else None,
            "loglevel": "info" if logger.isEnabledFor(logging.INFO) else "warning",
            "control_socket_disable": True,  # one shared ~/.gunicorn socket would clash between services
            "post_fork": FirstListener(partial(on_listening, f"http://{address}")),
        }
        GunicornService(config, options).run()


class FirstListener:
    """gunicorn's post_fork hook: announce the URL once, from the first worker whose socket listens.

    With SO_REUSEPORT the master never listens; announcing earlier let clients that connect as soon
    as they read the URL be refused.
    """

    def __init__(self, announce: Callable[[], None]):
        self.announce = announce
        self.done = multiprocessing.Value("b", False)  # made before the fork: shared by the workers

    def __call__(self, arbiter: Any, worker: Any) -> None:
        with self.done.get_lock():
            if self.done.value:
                return
            self.done.value = True
        self.announce()


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (a free port for 0) with SO_REUSEPORT, never listening.

    Held by the master while workers bind their own sockets to the same port, it keeps other
    programs off the port, and gives port 0 one number for all workers. Raises ServeError if
    another server already answers there (SO_REUSEPORT alone would silently share the port).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as gunicorn decides for its own sockets
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
        if answers(family, holder.getsockname()):
            raise OSError(errno.EADDRINUSE, "port in use: another server is already listening there")
    except OSError as exc:
        holder.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return holder


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
