"""Load a model folder's customize_service.py and build its one service, as ModelArts' runtime does."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
import traceback
from pathlib import Path
from types import ModuleType

from model_service.model_service import BaseService

from .errors import MnistSdkError, PackageError

logger = logging.getLogger(__name__)

SERVICE_FILE = "customize_service.py"


def load_service(model_dir: str | Path, model_name: str = "mnist") -> BaseService:
    """The one instance of the single leaf BaseService subclass in <model_dir>/customize_service.py."""
    model_dir = Path(model_dir)
    cls = find_service_class(model_dir)
    logger.info("building %s.%s for %s", cls.__module__, cls.__name__, model_dir)
    try:
        return cls(model_name, str(model_dir))
    except MnistSdkError:
        raise
    except Exception as exc:
        raise PackageError(f"{model_dir / SERVICE_FILE}: {cls.__name__}({model_name!r}, ...) "
                           f"raised {type(exc).__name__}: {exc}") from exc


def find_service_class(model_dir: str | Path) -> type[BaseService]:
    """The single leaf subclass of a model_service base class defined by the folder's service file."""
    path = Path(model_dir) / SERVICE_FILE
    leaves = leaf_classes(import_service_file(path))
    if len(leaves) != 1:
        found = ", ".join(sorted(c.__name__ for c in leaves)) or "none"
        raise PackageError(f"{path}: there should be one user defined service derived from "
                           f"a model_service base class (found {found})")
    return leaves[0]


def import_service_file(path: Path) -> ModuleType:
    """Import the file under a name unique to its folder, with the folder importable for helpers."""
    if not path.is_file():
        raise PackageError(f"{path}: file not found")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"customize_service_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look classes up by module name
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(spec.name, None)
        raise PackageError(f"{path}{error_line(exc, path)}: cannot import: "
                           f"{type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def leaf_classes(module: ModuleType) -> list[type[BaseService]]:
    """User classes (not the runtime's own) derived from BaseService that no other such class extends."""
    found = {obj for _, obj in inspect.getmembers(module, inspect.isclass)
             if issubclass(obj, BaseService) and not obj.__module__.startswith("model_service")}
    return [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]


def error_line(exc: BaseException, path: Path) -> str:
    """':N' for the line of the service file where the import failed, when known."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f":{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return f":{frames[-1].lineno}" if frames else ""
