"""gunicorn as a library: its master supervises worker processes that each serve through the edge."""
from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import signal
from dataclasses import replace
from typing import Any, Callable

from gunicorn import sock
from gunicorn.app.base import BaseApplication
from gunicorn.workers.base import Worker

from .app import ServeConfig, create_app
from .connection import EdgeLimits, body_framing, call_app, make_environ, parse_head
from .edge import DRAIN_SECONDS, AppThreads, Edge
from .loading import WARMUP_KEY, digit_png

logger = logging.getLogger(__name__)
# Python specialises its bytecode after a code path has run several times: with 3 rounds the first
# client request was 0.4-1.2 ms slower than the hundredth, with 30 it is within the noise (~2 ms).
HTTP_WARMUP_ROUNDS = 30


class GunicornService(BaseApplication):
    """Each worker builds its own app after fork (TensorFlow must not cross a fork) and serves it via EdgeWorker."""

    def __init__(self, config: ServeConfig, options: dict[str, Any], announce: Callable[[], None] = lambda: None):
        self.config = config
        self.options = options
        # Made before the fork, shared by all workers: /health says 200 only once every live worker
        # is warm, so the first requests never queue behind a sibling still loading on the same cores.
        self.warm = WarmWorkers(2 * int(options.get("workers", 1)) + 2)
        self.announce = FirstCall(announce)
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)
        self.cfg.set("worker_class", EdgeWorker)
        self.cfg.set("post_worker_init", self.warm_worker)
        self.cfg.set("child_exit", self.child_exit)

    def load(self) -> Any:
        # Loaded before the worker listens: it takes traffic only once warm, never answering 503.
        return create_app(config=replace(self.config, load_in_background=False, ready_gate=self.all_warm))

    def edge_limits(self) -> EdgeLimits:
        return EdgeLimits(app_seconds=self.config.time_budget_seconds)

    def warm_worker(self, worker: Any) -> None:
        """Run the warm-up digit through the edge's parser and writer on every thread of the worker's pool.

        Warming from the main thread left the first client request to run cold code on a pool thread.
        """
        try:
            worker.threads.on_every_thread(lambda: warm_http_path(worker.wsgi, self.config.auth_token),
                                           worker.cfg.threads)
        except Exception as exc:  # an optimisation only: a worker that could not warm still serves
            logger.warning("warming the worker's threads failed: %s", exc)

    def worker_listening(self, worker: Any) -> None:
        """The worker is warm and accepts connections: count it, and announce the URL once."""
        self.warm.add(worker.pid)
        self.announce()

    def worker_leaving(self, worker: Any) -> None:
        """The worker stops accepting (draining, or retiring after a request over budget)."""
        self.warm.discard(worker.pid)

    def child_exit(self, arbiter: Any, worker: Any) -> None:
        """gunicorn's master reaped a worker (even one killed outright): it no longer counts as warm."""
        self.warm.discard(worker.pid)

    def all_warm(self) -> bool:
        """True once as many live workers are warm as gunicorn runs."""
        return self.warm.count() >= self.cfg.workers


class WarmWorkers:
    """The pids of live, warm, listening workers, in memory shared across the fork."""

    def __init__(self, slots: int):
        self.pids = multiprocessing.Array("i", slots)

    def add(self, pid: int) -> None:
        with self.pids.get_lock():
            if pid in self.pids[:]:
                return
            for index, value in enumerate(self.pids):
                if value == 0:
                    self.pids[index] = pid
                    return

    def discard(self, pid: int) -> None:
        with self.pids.get_lock():
            for index, value in enumerate(self.pids):
                if value == pid:
                    self.pids[index] = 0

    def count(self) -> int:
        return sum(1 for pid in self.pids[:] if pid)


class FirstCall:
    """Calls the function once, from whichever process gets there first (state shared across the fork)."""

    def __init__(self, function: Callable[[], None]):
        self.function = function
        self.done = multiprocessing.Value("b", False)

    def __call__(self) -> None:
        with self.done.get_lock():
            if self.done.value:
                return
            self.done.value = True
        self.function()


class EdgeWorker(Worker):
    """A gunicorn worker serving through the edge: the master restarts it, we answer every byte.

    It listens only once the model is loaded and warm: gunicorn opens each SO_REUSEPORT socket
    at fork, and connections the kernel gave a booting worker waited seconds for it.
    """

    def init_process(self) -> None:
        for listener in self.sockets:
            listener.close()
        self.sockets = []
        self.threads = AppThreads(self.cfg.threads)
        self.graceful = True
        super().init_process()

    def run(self) -> None:
        if self.alive:
            asyncio.run(self.serve())

    async def serve(self) -> None:
        """Listen, serve until a signal, the master's death or a request over budget; then drain."""
        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        for signum in (signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self.quit)
        service = self.app
        self.sockets = sock.create_sockets(self.cfg, self.log)
        edge = Edge(self.wsgi, service.edge_limits(), self.threads, on_overrun=self.retire, on_tick=self.tick)
        await edge.start([listener.sock for listener in self.sockets])
        service.worker_listening(self)
        await self.stop.wait()
        service.worker_leaving(self)
        await edge.drain(DRAIN_SECONDS if self.graceful else 0.0)

    def tick(self) -> None:
        """The master's heartbeat, and a stop if the master is gone."""
        self.notify()
        if self.ppid != os.getppid():
            self.log.info("parent changed, shutting down: %s", self)
            self.stop.set()

    def quit(self) -> None:
        self.graceful = False
        self.stop.set()

    def retire(self) -> None:
        """A thread is stuck past the budget: stop taking requests, finish the others, let the master replace us."""
        self.log.warning("worker %s retires: a request ran past the time budget; the master starts a new one",
                         self.pid)
        self.app.worker_leaving(self)
        self.stop.set()


def warm_http_path(app: Any, token: str | None = None, rounds: int = HTTP_WARMUP_ROUNDS) -> None:
    """Send the warm-up digit through the edge's parser, admission and answer writer, in memory.

    The app's warm-up skips the edge; without this its code paths ran cold on the first client
    request (measured +1.5-3 ms with gunicorn's parser).
    """
    body = multipart_digit()
    auth = f"X-Auth-Token: {token}\r\n" if token else ""
    head = ("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=warm\r\n"
            f"{auth}Content-Length: {len(body)}").encode("latin-1")
    address = ("127.0.0.1", 0)
    for _ in range(rounds):
        environ = make_environ(*parse_head(head), address, address)
        body_framing(environ)
        app.admit(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ[WARMUP_KEY] = True  # not a client: the app does not log its answer
        call_app(app, environ, True)


def multipart_digit() -> bytes:
    """The warm-up digit as the body of a multipart form with boundary `warm`."""
    return (b'--warm\r\nContent-Disposition: form-data; name="images"; filename="warmup.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + digit_png() + b"\r\n--warm--\r\n")
