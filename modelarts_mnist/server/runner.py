"""How `serve` runs the app: one threaded process by default, or gunicorn with N worker processes."""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import replace
from typing import Any, Callable

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wsgi import ClosingIterator

from ..loader import find_service_class
from .app import SLOT_KEY, ServeConfig, create_app
from .loading import import_tensorflow, limit_tf_threads

logger = logging.getLogger(__name__)
access_log = logging.getLogger("modelarts_mnist.server.access")

GRACE_SECONDS = 30  # SIGTERM: how long in-flight requests may still run
SOCKET_TIMEOUT = 60  # a client silent this long mid-request is dropped (ModelArts' gateway: 40-60 s)
# Measured with benchmarks/serve_bench.py on 2 cores (see benchmarks/README.md). Throughput is CPU-bound
# and about equal for 1-2 workers per core; with one per core, a burst of keep-alive connections often
# lands mostly on one worker (c=32: 620-1240 req/s between runs) and 256-image batches got half the
# images/s. Two per core x 2 threads kept c=32 at 1000-1350 req/s and p99 at c=8 under 20 ms.
THREADS_PER_WORKER = 2  # gthread: the model and PIL release the GIL, so two requests overlap a little
WORKERS_PER_CORE = 2


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
    server = make_server(host, port, tracker, threaded=True, request_handler=QuietHandler)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    on_listening(f"http://{host}:{server.server_port}")
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
    """gunicorn with `workers` gthread processes; each loads and warms up the model after fork."""
    from .gunicorn_app import GunicornService

    find_service_class(config.model_dir)  # a missing or broken service file: one clear error, before forking
    preload_tensorflow(config)
    options = {
        "bind": f"{host}:{port}", "workers": workers, "worker_class": "gthread",
        "threads": THREADS_PER_WORKER, "keepalive": 5, "graceful_timeout": GRACE_SECONDS,
        "timeout": 120,  # loading TensorFlow and the model counts against the worker's heartbeat
        "accesslog": "-" if access_log.isEnabledFor(logging.INFO) else None,
        "loglevel": "info" if logger.isEnabledFor(logging.INFO) else "warning",
        "control_socket_disable": True,  # one shared ~/.gunicorn socket would clash between services
        "when_ready": lambda arbiter: on_listening(listening_url(arbiter, host)),
    }
    GunicornService(config, options).run()


def preload_tensorflow(config: ServeConfig) -> None:
    """Import TensorFlow once in the master, so forked workers skip its seconds-long import.

    Only the import: TensorFlow's runtime (thread pools, eager context) starts on first use,
    after the fork, in each worker. A package without a SavedModel never pays for it.
    """
    if config.model_dir is not None:
        limit_tf_threads(config.tf_threads or 1)  # environment first: TensorFlow reads it when it starts
        import_tensorflow(config.model_dir)


def listening_url(arbiter: Any, host: str) -> str:
    """The URL gunicorn's first listener is bound to (its port may have been 0)."""
    return f"http://{host}:{arbiter.LISTENERS[0].sock.getsockname()[1]}"
