"""Find and build a model folder's service, as ModelArts' runtime does with customize_service.py.

The rule (the platform's app.py): among the classes of customize_service.py, exactly one must derive
from the engine's base class and have no subclasses; it is built once as cls(model_name, model_path),
with the folder importable while the file is imported (helper modules shipped beside it). For a
TensorFlow model (config.json "model_type": "TensorFlow") that base is TfServingBaseService, so a class
deriving only from SingleNodeService is refused there; other folders may use any ModelService class.
"""
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import threading
import time
import traceback
from types import ModuleType
from typing import List, Type

from metric.metrics_manager import MetricsManager

from .errors import ServiceLoadError
from .model_service import BaseService

logger = logging.getLogger(__name__)

SERVICE_FILE = "customize_service.py"
CONFIG_FILE = "config.json"
# Seconds to wait for threads a service starts in __init__ (Huawei's TF 2.1 sample loads its model in one).
LOADING_WAIT = 120.0
NO_SINGLE_CLASS = "There should be one user defined service derived from ModelService."  # the platform's words


def load_service(model_dir: str, model_name: str = "mnist", wait_for_loading: float = 0.0) -> BaseService:
    """The one instance of the single leaf BaseService subclass in <model_dir>/customize_service.py.

    wait_for_loading: at most that many seconds to wait for threads the constructor started and left
    running (a model loading in the background), so the first request does not race them; 0: no wait.

    Raises:
        ServiceLoadError: the file is missing or fails to import, has no single leaf class,
            or the constructor raised (that exception is the __cause__).
    """
    model_dir = str(model_dir)
    cls = find_service_class(model_dir)
    logger.info("building %s.%s for %s", cls.__module__, cls.__name__, model_dir)
    MetricsManager.register_model(model_name)  # as the platform does at startup, before any request
    before = set(threading.enumerate())
    try:
        service = cls(model_name, model_dir)
    except ServiceLoadError:
        raise  # already says what is wrong with the package (e.g. its signatures)
    except Exception as exc:
        path = os.path.join(model_dir, SERVICE_FILE)
        raise ServiceLoadError("{}{}: {}({!r}, ...) raised {}: {}".format(
            path, error_line(exc, path), cls.__name__, model_name, type(exc).__name__, exc)) from exc
    if wait_for_loading > 0:
        join_new_threads(before, wait_for_loading)
    return service


def join_new_threads(before: set, timeout: float) -> None:
    """Wait, at most timeout seconds in all, for threads started since `before` was taken to end."""
    deadline = time.monotonic() + timeout
    started = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in started:
        logger.info("waiting for thread %r the service started while loading", thread.name)
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning("thread %r still runs after %.0f s; going on without it", thread.name, timeout)


def find_service_class(model_dir: str) -> Type[BaseService]:
    """The single leaf subclass of the engine's base class defined by the folder's service file."""
    path = os.path.join(str(model_dir), SERVICE_FILE)
    module = import_service_file(path)
    base = engine_base_class(str(model_dir))
    leaves = leaf_classes(module, base)
    if len(leaves) != 1:
        found = ", ".join(sorted(c.__name__ for c in leaves)) or "none"
        raise ServiceLoadError("{}: {} (found {}{})".format(path, NO_SINGLE_CLASS, found, wrong_base(module, base)))
    return leaves[0]


def engine_base_class(model_dir: str) -> Type[BaseService]:
    """TfServingBaseService for a TensorFlow model (config.json's model_type), else the root ModelService."""
    if model_type(model_dir).lower() != "tensorflow":
        return BaseService
    from .tfserving_model_service import TfServingBaseService  # numpy: only TensorFlow models pay for it

    return TfServingBaseService


def model_type(model_dir: str) -> str:
    """config.json's model_type ('' when the folder has no readable config.json: no engine rule applies)."""
    try:
        with open(os.path.join(model_dir, CONFIG_FILE), encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return ""
    value = config.get("model_type") if isinstance(config, dict) else None
    return value if isinstance(value, str) else ""


def wrong_base(module: ModuleType, base: type) -> str:
    """'; X does not derive from TfServingBaseService, ...' when the module has leaves of another base."""
    if base is BaseService:
        return ""
    others = sorted(c.__name__ for c in leaf_classes(module, BaseService) if not issubclass(c, base))
    if not others:
        return ""
    return "; {} not derive from {}, which a TensorFlow model's service must".format(
        ", ".join(others) + (" does" if len(others) == 1 else " do"), base.__name__)


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


def leaf_classes(module: ModuleType, base: type = BaseService) -> List[Type[BaseService]]:
    """User classes (not the runtime's own) in the module derived from base that have no subclasses."""
    return [obj for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, base) and not is_runtime_class(obj)
            and not obj.__subclasses__()]


def is_runtime_class(cls: type) -> bool:
    """Whether cls is one of this runtime's own classes (a user helper named model_service_x is not)."""
    return cls.__module__ == "model_service" or cls.__module__.startswith("model_service.")  # the platform's test: a class with any subclass is not the one


def error_line(exc: BaseException, path: str) -> str:
    """':N' for the line of the service file where the exception arose, when known."""
    if isinstance(exc, SyntaxError) and exc.filename == path and exc.lineno:
        return ":{}".format(exc.lineno)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return ":{}".format(frames[-1].lineno) if frames else ""
