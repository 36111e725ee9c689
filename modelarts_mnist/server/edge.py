"""The service's HTTP edge: one asyncio loop serving connections, a small thread pool running the app.

No client can hold the loop: it only reads, parses and writes, and every phase of a connection
has a deadline (connection.EdgeLimits) checked by a sweeper twice a second.
"""
from __future__ import annotations

import asyncio
import collections
import logging
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
    """Daemon threads running the app: one stuck in user code can neither block exit nor be killed.

    A job wakes exactly one thread, the one idle most recently (its caches are warm): with a shared
    queue.SimpleQueue every job also woke each other idle thread, which took the GIL only to find
    the queue empty (a context switch and a GIL hand-off per request).
    """

    def __init__(self, count: int, name: str = "app"):
        self.pending: collections.deque = collections.deque()  # jobs no thread was idle for
        self.idle: list[Idle] = []  # a stack: the last thread to go idle is woken first
        self.guard = threading.Lock()  # over pending and idle; held for a few bytecodes only
        self.name = name
        self.count = 0
        for _ in range(count):
            self.add()

    def add(self) -> None:
        """One more thread (to replace one lost to a request over budget)."""
        self.count += 1
        threading.Thread(target=self.work, name=f"{self.name}-{self.count}", daemon=True).start()

    def submit(self, job: Callable, *args: Any) -> None:
        with self.guard:
            if not self.idle:
                self.pending.append((job, args))
                return
            idle = self.idle.pop()
        idle.job = (job, args)
        idle.wake.release()

    def work(self) -> None:
        me = Idle()
        while True:
            with self.guard:
                if self.pending:
                    job, args = self.pending.popleft()
                else:
                    self.idle.append(me)
                    job = None
            if job is None:
                me.wake.acquire()  # released by submit, once it has set me.job
                job, args = me.job
                me.job = None
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


class Idle:
    """An idle pool thread: it waits on its own lock, which submit releases once the job is set."""

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.job: tuple[Callable, tuple] | None = None


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
        # Past the descriptor limit accept() fails and asyncio stops accepting for a second: stay below it
        # (each connection holds two: the loop's, and the duplicate pool threads write answers to).
        self.max_connections = min(limits.max_connections,
                                   (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100) // 2)
        self.connections: dict[Connection, None] = {}  # insertion order: oldest first
        self.running = 0
        self.buffered = 0  # bytes of requests still arriving, over all connections
        self.finished: collections.deque = collections.deque()  # Answer records, in the order they were made
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
        """In a pool thread: the app's whole answer, written here when it can be, else queued for the loop.

        Written here, the answer is recorded before the lock is released, and the loop is not woken:
        the client's next request, its leaving, or the sweeper's next round moves the connection on.
        """
        payload, keep_alive = call_app(self.app, environ, keep_alive)
        if keep_alive:
            with connection.lock:
                sent = connection.write_now(serial, payload)
                if sent:
                    self.finished.append((connection, serial, payload, keep_alive, sent))
            if sent == len(payload):
                return
        else:
            sent = 0
        if not sent:
            self.finished.append((connection, serial, payload, keep_alive, 0))
        if not self.wake_pending:  # one wake-up of the loop carries every answer finished meanwhile
            self.wake_pending = True
            assert self.loop is not None
            try:
                self.loop.call_soon_threadsafe(self.write_finished)
            except RuntimeError:  # the loop is closed: the process is exiting
                pass

    def write_finished(self) -> None:
        """On the loop, when a pool thread woke it: collect()."""
        self.wake_pending = False  # before draining: an answer queued from now on schedules another call
        self.collect()

    def collect(self) -> None:
        """On the loop: finish the answers of the pool (late ones after a 504 are dropped)."""
        finished = self.finished
        while finished:
            connection, serial, payload, keep_alive, sent = finished.popleft()
            if serial == connection.serial:  # else answered 504 already, and no longer counted
                if sent:  # written by a pool thread, which may still hold the lock: wait for its write to end
                    with connection.lock:
                        pass
                self.running -= 1
                connection.answered(serial, payload, keep_alive, sent)

    def overrun(self) -> None:
        """A request ran past the budget and was answered 504; its thread stays stuck in the app."""
        logger.warning("a request ran past the %g s time budget: answered 504", self.limits.app_seconds)
        self.on_overrun()

    def sweep(self) -> None:
        """Expire connections past their phase's deadline; then the owner's tick (heartbeat)."""
        try:
            self.collect()  # answers pool threads wrote: those connections are no longer running
            now = self.now()
            for connection in [c for c in self.connections if c.deadline <= now]:
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
            self.collect()
        if self.running:
            logger.warning("stopping with %d request(s) still running after %g s", self.running, grace)
        return self.running == 0
