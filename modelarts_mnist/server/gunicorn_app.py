"""gunicorn as a library: the options come from `serve`, so no config file is needed."""
from __future__ import annotations

import multiprocessing
from dataclasses import replace
from typing import Any

from gunicorn.app.base import BaseApplication

from .app import ServeConfig, create_app


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

    def load(self) -> Any:
        # Loaded before the worker accepts: it takes traffic only once warm, never answering 503.
        app = create_app(config=replace(self.config, load_in_background=False, ready_gate=self.all_warm))
        with self.warm_workers.get_lock():
            self.warm_workers.value += 1
        return app

    def all_warm(self) -> bool:
        """True once as many workers have warmed up as gunicorn runs (restarted ones count again)."""
        return self.warm_workers.value >= self.cfg.workers
