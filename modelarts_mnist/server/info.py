"""Describe a served model folder for the prediction page."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def describe_model(model_dir: str | Path, service: Any = None) -> dict[str, Any]:
    """Name, version, signature, metrics and apis of the model in model_dir."""
    model_dir = Path(model_dir)
    return {"model_name": model_dir.name, "version": None, "signature": None,
            "metrics": {}, "apis": []}
