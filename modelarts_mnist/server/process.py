"""`serve --threaded`: the edge in this one process, the model loading in the background meanwhile."""
from __future__ import annotations

import asyncio
import signal
import socket
from dataclasses import replace
from typing import Callable

from .app import SLOT_KEY, ServeConfig, create_app
from .connection import EdgeLimits
from .edge import DRAIN_SECONDS, AppThreads, Edge
from .port import bracketed, listening_socket

APP_THREADS = 4  # requests answered at once; a request over budget gets its thread replaced


def run_in_process(config: ServeConfig, host: str, port: int, on_listening: Callable[[str], None]) -> None:
    """Listen at once (a busy port fails before the model loads), then serve until SIGTERM/SIGINT."""
    listener = listening_socket(host, port)
    app = create_app(config=replace(config, load_in_background=True))
    url = f"http://{bracketed(host)}:{listener.getsockname()[1]}"
    asyncio.run(serve(app, listener, config, lambda: on_listening(url)))
    error = app.extensions[SLOT_KEY].error
    if error is not None:
        raise error


async def serve(app: object, listener: socket.socket, config: ServeConfig, announce: Callable[[], None]) -> None:
    """The edge on listener until a signal (or a failed model load); then drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    graceful = [True]
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: (graceful.__setitem__(0, False), stop.set()))
    slot = app.extensions[SLOT_KEY]  # type: ignore[attr-defined]
    threads = AppThreads(APP_THREADS)
    edge = Edge(app, EdgeLimits(app_seconds=config.time_budget_seconds), threads, on_overrun=threads.add,
                on_tick=lambda: slot.error is not None and stop.set())
    await edge.start([listener])
    announce()
    await stop.wait()
    await edge.drain(DRAIN_SECONDS if graceful[0] else 0.0)
