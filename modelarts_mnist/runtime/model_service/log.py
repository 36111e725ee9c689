"""`model_service.log`: the logger helper some real packages (Spark samples) import from here."""
import logging
from typing import Optional

__all__ = ["getLogger"]


def getLogger(name: Optional[str] = None) -> logging.Logger:  # noqa: N802 (the platform's spelling)
    """The logging logger of that name."""
    return logging.getLogger(name)
