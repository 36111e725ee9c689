"""`serve` with worker processes: gunicorn's master supervises them (restarts, heartbeat, signals)."""
from __future__ import annotations

import logging
from typing import Callable

from ..loader import find_service_class
from .app import ServeConfig
from .edge import DRAIN_SECONDS
from .loading import preload_tensorflow
from .port import bracketed, reserve_port

logger = logging.getLogger(__name__)

# Measured with benchmarks/serve_bench.py on 2 cores (see benchmarks/README.md). With a socket per worker
# (SO_REUSEPORT) connections spread evenly, and one worker per core did best: at c=32, 2 workers
# used 1.2-1.4 ms of CPU per request against 1.6 ms for 4 (more processes: more cache misses and
# context switches). With two app threads per worker, a slow request (a 256-image batch, a large
# photo) does not hold up the next one on that worker.
THREADS_PER_WORKER = 2
WORKERS_PER_CORE = 1


def run_workers(config: ServeConfig, host: str, port: int, workers: int, on_listening: Callable[[str], None]) -> None:
    """gunicorn with `workers` processes; each loads and warms up the model after fork, then listens.

    The port is taken first: a busy port fails before TensorFlow starts. Each worker listens on
    its own SO_REUSEPORT socket, so the kernel spreads connections evenly (on one shared socket
    the first worker to wake took most of a burst of keep-alive connections).
    """
    from .gunicorn_app import GunicornService

    with reserve_port(host, port) as holder:
        if config.engine_python is None:  # else the engine's interpreter loads the code, and this one needs no TF
            find_service_class(config.model_dir)  # a missing or broken service file: one clear error, before forking
            preload_tensorflow(config)
        address = f"{bracketed(host)}:{holder.getsockname()[1]}"
        options = {
            "bind": address, "reuse_port": True, "workers": workers, "threads": THREADS_PER_WORKER,
            "graceful_timeout": int(DRAIN_SECONDS) + 1,
            "timeout": 120,  # loading TensorFlow and the model counts against the worker's heartbeat
            "loglevel": "info" if logger.isEnabledFor(logging.INFO) else "warning",
            "control_socket_disable": True,  # one shared ~/.gunicorn socket would clash between services
        }
        GunicornService(config, options, announce=lambda: on_listening(f"http://{address}")).run()
