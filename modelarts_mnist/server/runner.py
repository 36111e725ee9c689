"""How `serve` runs: worker processes under gunicorn's master, or the edge in one threaded process."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable

from .admission import is_loopback_address
from .app import ServeConfig
from .supervisor import WORKERS_PER_CORE


def run(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8080, workers: int | None = None,
        on_listening: Callable[[str], None] = lambda url: None) -> None:
    """Serve until SIGTERM/SIGINT: threaded in this process, or under gunicorn when workers is set."""
    config = replace(config, tf_threads=tf_threads_for(workers or 1), loopback_only=is_loopback_address(host))
    if workers:
        from .supervisor import run_workers

        run_workers(config, host, port, workers, on_listening)
    else:
        from .process import run_in_process

        run_in_process(config, host, port, on_listening)


def default_workers() -> int:
    """serve's worker count when none is given: WORKERS_PER_CORE for each core this process may use."""
    return WORKERS_PER_CORE * len(os.sched_getaffinity(0))


def tf_threads_for(workers: int) -> int:
    """TensorFlow pool size per process: the cores this process may use, shared among workers."""
    return max(1, len(os.sched_getaffinity(0)) // workers)
