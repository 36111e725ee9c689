"""gunicorn as a library: the options come from `serve`, so no config file is needed."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from gunicorn.app.base import BaseApplication

from .app import ServeConfig, create_app


class GunicornService(BaseApplication):
    """Each worker builds its own app after fork: TensorFlow must not cross a fork."""

    def __init__(self, config: ServeConfig, options: dict[str, Any]):
        self.config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        # Loaded before the worker accepts: it takes traffic only once warm, never answering 503.
        return create_app(config=replace(self.config, load_in_background=False))
