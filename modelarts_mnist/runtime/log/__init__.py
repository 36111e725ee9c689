"""ModelArts' top-level `log` module: real inference code writes `logger = log.getLogger(__name__)`.

Installed beside `model_service` (setup.py here, copied into each engine environment), stdlib only,
Python 3.6+. The loggers are plain `logging` loggers, so the host's logging setup decides where
their lines go.
"""
import logging
from typing import Optional

__all__ = ["getLogger"]


def getLogger(name: Optional[str] = None) -> logging.Logger:  # noqa: N802 (the platform's spelling)
    """The logging logger of that name, as the platform's log.getLogger returns."""
    return logging.getLogger(name)
