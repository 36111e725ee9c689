"""What the service logs about failed requests: bounded, whatever clients send.

A client error (4xx) is one line without a traceback; a server error (5xx) is one record with its
traceback. Each kind has a token bucket, so a flood of bad requests writes a few lines, then one
summary of what was left out, instead of growing the log with every request.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Callable

logger = logging.getLogger(__name__)

# A burst of distinct failures is logged in full; past it, one line per refill period at most.
CLIENT_BURST, CLIENT_PER_SECOND = 20, 0.1
SERVER_BURST, SERVER_PER_SECOND = 10, 0.1
TRACEBACK_LIMIT = 8000  # characters of one traceback kept: its start and its end


class Bucket:
    """A token bucket that also counts what it refused since it last allowed something."""

    def __init__(self, burst: int, per_second: float, clock: Callable[[], float] = time.monotonic):
        self.burst, self.per_second, self.clock = burst, per_second, clock
        self.tokens = float(burst)
        self.last = clock()
        self.refused = 0
        self.refused_since = 0.0
        self._lock = threading.Lock()  # gthread workers answer on several threads

    def take(self) -> tuple[bool, int, float]:
        """(allowed, refused before this one, seconds since the first of those were refused)."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_second)
            self.last = now
            if self.tokens < 1:
                if not self.refused:
                    self.refused_since = now
                self.refused += 1
                return False, 0, 0.0
            self.tokens -= 1
            refused, self.refused = self.refused, 0
            return True, refused, now - self.refused_since if refused else 0.0


class ErrorLog:
    """The one place that logs failed requests, so their volume has one owner."""

    def __init__(self, log: logging.Logger = logger, *, clock: Callable[[], float] = time.monotonic,
                 client: tuple[int, float] = (CLIENT_BURST, CLIENT_PER_SECOND),
                 server: tuple[int, float] = (SERVER_BURST, SERVER_PER_SECOND)):
        self.log = log
        self.client = Bucket(*client, clock=clock)
        self.server = Bucket(*server, clock=clock)

    def client_error(self, status: int, line: str) -> None:
        """One WARNING line for a 4xx answer; line must already be a safe single line."""
        if self._admit(self.client, "client"):
            self.log.warning("%d %s", status, line)

    def server_error(self, status: int, line: str, error: BaseException | None = None) -> None:
        """One ERROR record for a 5xx answer, with error's traceback (cause chain included, clipped)."""
        if not self._admit(self.server, "server"):
            return
        if error is None or not self.log.isEnabledFor(logging.ERROR):
            self.log.error("%d %s", status, line)
            return
        record = self.log.makeRecord(self.log.name, logging.ERROR, __file__, 0, "%d %s", (status, line),
                                     (type(error), error, error.__traceback__))
        # Formatters print exc_text when it is set: the clipped text, with exc_info kept for handlers.
        record.exc_text = format_traceback(error)
        self.log.handle(record)

    def _admit(self, bucket: Bucket, kind: str) -> bool:
        allowed, refused, seconds = bucket.take()
        if refused:
            self.log.warning("%d %s errors not logged in the last %.0f s", refused, kind, seconds)
        return allowed


def format_traceback(error: BaseException, limit: int = TRACEBACK_LIMIT) -> str:
    """error's traceback as text, its middle cut when longer than limit (messages may echo input)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip("\n")
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"
