"""gunicorn as a library: the options come from `serve`, so no config file is needed."""
from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
from dataclasses import replace
from typing import Any

from gunicorn.app.base import BaseApplication

from .app import ServeConfig, create_app
from .loading import digit_png

logger = logging.getLogger(__name__)
# Python specialises its bytecode after a code path has run several times: with 3 rounds the first
# client request was 0.4-1.2 ms slower than the hundredth, with 30 it is within the noise (~2 ms).
HTTP_WARMUP_ROUNDS = 30


class GunicornService(BaseApplication):
    """Each worker builds its own app after fork: TensorFlow must not cross a fork."""

    def __init__(self, config: ServeConfig, options: dict[str, Any]):
        self.config = config
        self.options = options
        # Made before the fork, shared by all workers: /health says 200 only once every worker is
        # warm, so the first requests never queue behind a sibling still loading on the same cores.
        self.warm_workers = multiprocessing.Value("i", 0)
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)
        self.cfg.set("post_worker_init", self.warm_worker)

    def load(self) -> Any:
        # Loaded before the worker accepts: it takes traffic only once warm, never answering 503.
        return create_app(config=replace(self.config, load_in_background=False, ready_gate=self.all_warm))

    def warm_worker(self, worker: Any) -> None:
        """Run the warm-up digit on every thread of the worker's pool, then count the worker as warm.

        gunicorn starts pool threads on demand; warming from the main thread left the first client
        request to start a thread and run cold code on it.
        """
        pool = getattr(worker, "tpool", None)
        if pool is None:  # a worker class without a thread pool answers on its main thread
            warm_http_path(worker.wsgi, worker.cfg)
        else:
            warm_threads(pool, worker.cfg.threads, lambda: warm_http_path(worker.wsgi, worker.cfg))
        with self.warm_workers.get_lock():
            self.warm_workers.value += 1

    def all_warm(self) -> bool:
        """True once as many workers have warmed up as gunicorn runs (restarted ones count again)."""
        return self.warm_workers.value >= self.cfg.workers


def warm_threads(pool: Any, threads: int, warm: Any, timeout: float = 60.0) -> None:
    """Call warm() on `threads` distinct threads of the executor, starting each of them.

    The tasks wait for each other, so the executor cannot hand them all to one idle thread.
    """
    barrier = threading.Barrier(threads)

    def task() -> None:
        barrier.wait(timeout)
        warm()

    try:
        for future in [pool.submit(task) for _ in range(threads)]:
            future.result(timeout)
    except Exception as exc:  # an optimisation only: a worker that could not warm still serves
        logger.warning("warming the worker's threads failed: %s", exc)


def warm_http_path(app: Any, cfg: Any, rounds: int = HTTP_WARMUP_ROUNDS) -> None:
    """Send the warm-up digit through gunicorn's own parser and response writer, in memory.

    The app's warm-up skips gunicorn; without this its code paths ran cold on the first client
    request (measured +1.5-3 ms). gunicorn internals may change, so a failure only logs.
    """
    from gunicorn.http import RequestParser, wsgi

    body = multipart_digit()
    raw = (b"POST / HTTP/1.1\r\nHost: warm-up\r\nContent-Type: multipart/form-data; boundary=warm\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    address = ("127.0.0.1", 0)
    try:
        for _ in range(rounds):
            ours, theirs = socket.socketpair()  # read from and answered on a real socket, as for a client
            with ours, theirs:
                theirs.sendall(raw)  # a few kB: fits the socket buffer, nothing blocks
                request = next(RequestParser(cfg, ours, address))
                response, environ = wsgi.create(request, ours, address, address, cfg)
                for chunk in app(environ, response.start_response):
                    response.write(chunk)
                response.close()
    except Exception as exc:  # warm-up is an optimisation; serving must not depend on gunicorn's internals
        logger.warning("gunicorn warm-up request failed: %s", exc)


def multipart_digit() -> bytes:
    """The warm-up digit as the body of a multipart form with boundary `warm`."""
    return (b'--warm\r\nContent-Disposition: form-data; name="images"; filename="warmup.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + digit_png() + b"\r\n--warm--\r\n")
