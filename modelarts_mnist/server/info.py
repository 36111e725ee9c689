"""Describe a served model folder for the prediction page's /ui/model.json."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Training jobs write versions as V0001, V0002, ... (see jobs.format_version).
VERSION_NAME = re.compile(r"^V\d{4,}$")
CONFIG_KEYS = ("model_algorithm", "model_type", "runtime")


def describe_model(model_dir: str | Path, service: Any = None) -> dict[str, Any]:
    """Name, version, signature, metrics and apis of the model package in model_dir.

    Args:
        model_dir: the package folder (`.../V0001/model` in the tutorial's layout).
        service: the loaded service; its model_name and describe_signature() are used when present.

    Returns:
        A JSON-ready dict: model_name, version (None outside a V000N folder), model_dir,
        model_algorithm, model_type, runtime, signature, metrics, apis, and config_problem
        (None, or why config.json could not be read).
    """
    model_dir = Path(model_dir)
    config, problem = read_config(model_dir / "config.json")
    version = find_version(model_dir)
    info: dict[str, Any] = {
        "model_name": getattr(service, "model_name", None) or guess_name(model_dir, version),
        "version": version,
        "model_dir": str(model_dir),
    }
    info.update({key: config.get(key) for key in CONFIG_KEYS})
    info["signature"] = describe_signature(service)
    info["metrics"] = config.get("metrics") if isinstance(config.get("metrics"), dict) else {}
    info["apis"] = config.get("apis") if isinstance(config.get("apis"), list) else []
    info["config_problem"] = problem
    return info


def read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    """The parsed config.json and None, or an empty dict and the reason it is unusable."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"{path}: no config.json in the model folder"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        # The page still works without it; the checks command reports the details.
        logger.warning("cannot read %s: %s", path, error)
        return {}, f"{path}: not readable JSON ({error})"
    if not isinstance(config, dict):
        return {}, f"{path}: the top level is not a JSON object"
    return config, None


def find_version(model_dir: Path) -> str | None:
    """The V000N folder holding model_dir (or model_dir itself when so named), else None."""
    for folder in (model_dir, model_dir.parent):
        if VERSION_NAME.match(folder.name):
            return folder.name
    return None


def guess_name(model_dir: Path, version: str | None) -> str:
    """A model name from the layout: the folder above V000N (`mnist-model`), else the folder."""
    if version is None:
        return model_dir.name
    version_dir = model_dir if model_dir.name == version else model_dir.parent
    return version_dir.parent.name or version


def describe_signature(service: Any) -> dict[str, Any] | None:
    """The service's serving signature, when it can describe one."""
    describe = getattr(service, "describe_signature", None)
    return describe() if callable(describe) else None
