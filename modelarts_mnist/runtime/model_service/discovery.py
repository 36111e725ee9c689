"""Find and build a model folder's service, as ModelArts' runtime does with customize_service.py.

The rule: the folder's customize_service.py defines exactly one leaf subclass of a model_service
base class; it is built once as cls(model_name, model_path), with the folder importable while the
file is imported (helper modules shipped beside it).
"""
import hashlib
import importlib.util
import inspect
import logging
import os
import sys
import traceback
from types import ModuleType
from typing import List, Type

from .errors import ServiceLoadError
from .model_service import BaseService

logger = logging.getLogger(__name__)

SERVICE_FILE = "customize_service.py"


def load_service(model_dir: str, model_name: str = "mnist") -> BaseService:
    """The one instance of the single leaf BaseService subclass in <model_dir>/customize_service.py.

    Raises:
        ServiceLoadError: the file is missing or fails to import, has no single leaf class,
            or the constructor raised (that exception is the __cause__).
    """
    model_dir = str(model_dir)
    cls = find_service_class(model_dir)
    logger.info("building %s.%s for %s", cls.__module__, cls.__name__, model_dir)
    try:
        return cls(model_name, model_dir)
    except ServiceLoadError:
        raise  # already says what is wrong with the package (e.g. its signatures)
    except Exception as exc:
        path = os.path.join(model_dir, SERVICE_FILE)
        raise ServiceLoadError("{}{}: {}({!r}, ...) raised {}: {}".format(
            path, error_line(exc, path), cls.__name__, model_name, type(exc).__name__, exc)) from exc


def find_service_class(model_dir: str) -> Type[BaseService]:
    """The single leaf subclass of a model_service base class defined by the folder's service file."""
    path = os.path.join(str(model_dir), SERVICE_FILE)
    leaves = leaf_classes(import_service_file(path))
    if len(leaves) != 1:
        found = ", ".join(sorted(c.__name__ for c in leaves)) or "none"
        raise ServiceLoadError("{}: there should be one user defined service derived from "
                               "a model_service base class (found {})".format(path, found))
    return leaves[0]


def import_service_file(path: str) -> ModuleType:
    """Import the file under a name unique to its folder, with the folder importable for helpers."""
    if not os.path.isfile(path):
        raise ServiceLoadError("{}: file not found".format(path))
    digest = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location("customize_service_" + digest, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look classes up by module name
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(spec.name, None)
        raise ServiceLoadError("{}{}: cannot import: {}: {}".format(
            path, error_line(exc, path), type(exc).__name__, exc)) from exc
    finally:
        sys.path.remove(folder)
    return module


def leaf_classes(module: ModuleType) -> List[Type[BaseService]]:
    """User classes (not the runtime's own) derived from BaseService that no other such class extends."""
    found = {obj for _, obj in inspect.getmembers(module, inspect.isclass)
             if issubclass(obj, BaseService) and not obj.__module__.startswith("model_service")}
    return [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]


def error_line(exc: BaseException, path: str) -> str:
    """':N' for the line of the service file where the exception arose, when known."""
    if isinstance(exc, SyntaxError) and exc.filename == path and exc.lineno:
        return ":{}".format(exc.lineno)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return ":{}".format(frames[-1].lineno) if frames else ""
