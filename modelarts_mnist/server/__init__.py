"""The local online service (ModelArts' inference API) and how `serve` runs it."""
from .app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
