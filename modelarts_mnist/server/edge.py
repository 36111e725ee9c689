"""The service's HTTP edge: one asyncio loop serving connections, a small thread pool running the app.

No client can hold the loop: it only reads, parses and writes, and every phase of a connection
has a deadline (connection.EdgeLimits) checked by a sweeper twice a second.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import queue
import resource
import socket
import threading
from typing import Any, Callable

from ..errors import MalformedHttp
from .connection import BODY, HEAD, RUNNING, Connection, EdgeLimits, call_app

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 0.5
BACKLOG = 2048
# SIGTERM: how long running app calls may still finish; stalled clients are dropped at once, so the
# service is gone within 10 s (gunicorn's master waits a second longer before killing a worker).
DRAIN_SECONDS = 8.0


class AppThreads:
    """Daemon threads running the app: one stuck in user code can neither block exit nor be killed."""

    def __init__(self, count: int, name: str = "app"):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.name = name
        self.count = 0
        for _ in range(count):
            self.add()

    def add(self) -> None:
        """One more thread (to replace one lost to a request over budget)."""
        self.count += 1
        threading.Thread(target=self.work, name=f"{self.name}-{self.count}", daemon=True).start()

    def submit(self, job: Callable, *args: Any) -> None:
        self.jobs.put((job, args))

    def work(self) -> None:
        while True:
            job, args = self.jobs.get()
            try:
                job(*args)
            except Exception:  # jobs answer their own errors; this only keeps the thread alive
                logger.exception("a pool job failed")

    def on_every_thread(self, task: Callable[[], None], threads: int, timeout: float = 60.0) -> None:
        """Run task once on each of `threads` distinct threads (they wait for each other to get one each)."""
        barrier = threading.Barrier(threads)
        done = threading.Semaphore(0)
        failures: list[BaseException] = []

        def run() -> None:
            try:
                barrier.wait(timeout)
                task()
            except BaseException as exc:  # reported to the caller below
                failures.append(exc)
            finally:
                done.release()

        for _ in range(threads):
            self.submit(run)
        for _ in range(threads):
            if not done.acquire(timeout=timeout):
                raise TimeoutError(f"pool threads did not finish warming within {timeout:g} s")
        if failures:
            raise failures[0]


class Edge:
    """Serves the WSGI app on listening sockets until stopped; then drains."""

    def __init__(self, app: Any, limits: EdgeLimits, threads: AppThreads, *,
                 on_overrun: Callable[[], None] = lambda: None, on_tick: Callable[[], None] = lambda: None):
        self.app = app
        self.admit: Callable[[dict], int] = app.admit
        self.limits = limits
        self.threads = threads
        self.on_overrun = on_overrun
        self.on_tick = on_tick
        # Past the descriptor limit accept() fails and asyncio stops accepting for a second: stay below it.
        self.max_connections = min(limits.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100)
        self.connections: dict[Connection, None] = {}  # insertion order: oldest first
        self.running = 0
        self.buffered = 0  # bytes of requests still arriving, over all connections
        self.finished: collections.deque = collections.deque()  # (connection, serial, answer, keep-alive)
        self.wake_pending = False
        self.draining = False
        self.servers: list[asyncio.base_events.Server] = []
        self.server_address: tuple[str, int] = ("", 0)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.now: Callable[[], float] = lambda: 0.0

    async def start(self, sockets: list[socket.socket]) -> None:
        """Accept connections on the (bound) sockets and start the sweeper."""
        self.loop = loop = asyncio.get_running_loop()
        self.now = loop.time
        for sock in sockets:
            sock.setblocking(False)
            self.servers.append(await loop.create_server(lambda: Connection(self), sock=sock, backlog=BACKLOG))
        name = sockets[0].getsockname()
        self.server_address = (str(name[0]), int(name[1]))
        loop.call_later(SWEEP_SECONDS, self.sweep)

    def opened(self, connection: Connection) -> None:
        """A new connection; past max_connections the oldest one not running the app is closed."""
        if self.draining:
            connection.transport.abort()
            return
        self.connections[connection] = None
        if len(self.connections) > self.max_connections:
            for old in self.connections:
                if old is not connection and old.phase != RUNNING:
                    old.transport.abort()
                    break

    def shed(self, current: Connection) -> None:
        """Over the buffered-bytes cap: cut the requests still arriving that progressed least recently."""
        arriving = sorted((c for c in self.connections if c.phase in (HEAD, BODY) and c is not current),
                          key=lambda c: c.deadline)
        for connection in arriving:
            if self.buffered <= self.limits.buffered_bytes:
                return
            connection.refuse(MalformedHttp("request too slow: cut to make room for other uploads",
                                            http_status=408))

    def closed(self, connection: Connection) -> None:
        self.connections.pop(connection, None)

    def submit(self, connection: Connection, serial: int, environ: dict, keep_alive: bool) -> None:
        """Run the app for this request in a pool thread; its answer comes back on the loop."""
        self.running += 1
        self.threads.submit(self.call, connection, serial, environ, keep_alive)

    def call(self, connection: Connection, serial: int, environ: dict, keep_alive: bool) -> None:
        """In a pool thread: the app's whole answer, queued for the loop to write."""
        payload, keep_alive = call_app(self.app, environ, keep_alive)
        self.finished.append((connection, serial, payload, keep_alive))
        if not self.wake_pending:  # one wake-up of the loop carries every answer finished meanwhile
            self.wake_pending = True
            assert self.loop is not None
            try:
                self.loop.call_soon_threadsafe(self.write_finished)
            except RuntimeError:  # the loop is closed: the process is exiting
                pass

    def write_finished(self) -> None:
        """On the loop: write the answers the pool finished (late ones after a 504 are dropped)."""
        self.wake_pending = False  # before draining: an answer queued from now on schedules another call
        finished = self.finished
        while finished:
            connection, serial, payload, keep_alive = finished.popleft()
            if serial == connection.serial:  # else answered 504 already, and no longer counted
                self.running -= 1
                connection.answered(serial, payload, keep_alive)

    def overrun(self) -> None:
        """A request ran past the budget and was answered 504; its thread stays stuck in the app."""
        logger.warning("a request ran past the %g s time budget: answered 504", self.limits.app_seconds)
        self.on_overrun()

    def sweep(self) -> None:
        """Expire connections past their phase's deadline; then the owner's tick (heartbeat)."""
        try:
            now = self.now()
            for connection in [c for c in self.connections if c.deadline <= now]:
                if connection.phase == RUNNING:
                    self.running -= 1  # no longer waited for
                try:
                    connection.expire()
                except Exception:  # one broken socket must not stop the deadlines of all the others
                    logger.exception("expiring a connection failed")
                    connection.transport.abort()
                    self.closed(connection)
            self.on_tick()
        finally:
            if self.loop is not None and not self.loop.is_closed():
                self.loop.call_later(SWEEP_SECONDS, self.sweep)

    async def drain(self, grace: float) -> bool:
        """Stop accepting, close every connection not running the app, wait up to grace for the rest.

        True if every running request was answered in time.
        """
        self.draining = True
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            if connection.phase != RUNNING:
                connection.transport.abort()
        deadline = self.now() + grace
        while self.running > 0 and self.now() < deadline:
            await asyncio.sleep(0.05)
        if self.running:
            logger.warning("stopping with %d request(s) still running after %g s", self.running, grace)
        return self.running == 0
