"""The SDK side of the model_service runtime: its load and step failures as SDK errors.

The runtime (`model_service.discovery`) owns the rule that picks and builds the service class; it
raises its own plain exceptions. This module maps them: a package that gives no service is a
PackageError, a failed request an InferenceFailed (400 when user code raised KeyError or TypeError,
ModelArts' rule for bad request data; 500 otherwise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from model_service import discovery
from model_service.errors import ServiceLoadError, StepFailed
from model_service.model_service import BaseService

from .errors import InferenceFailed, PackageError

SERVICE_FILE = discovery.SERVICE_FILE
CLIENT_ERRORS = (KeyError, TypeError)  # user code raising these answers 400 on ModelArts


def load_service(model_dir: str | Path, model_name: str = "mnist", wait_for_loading: float = 0.0) -> BaseService:
    """The one instance of the single leaf BaseService subclass in <model_dir>/customize_service.py.

    wait_for_loading: seconds to wait for threads its constructor left running (see discovery.load_service).
    """
    try:
        return discovery.load_service(str(model_dir), model_name, wait_for_loading)
    except ServiceLoadError as exc:
        raise package_error(exc) from exc


def find_service_class(model_dir: str | Path) -> type[BaseService]:
    """The single leaf subclass of a model_service base class defined by the folder's service file."""
    try:
        return discovery.find_service_class(str(model_dir))
    except ServiceLoadError as exc:
        raise package_error(exc) from exc


def package_error(exc: ServiceLoadError) -> PackageError:
    """The SDK error for a folder the runtime could not turn into a service."""
    return PackageError(str(exc))


def inference_failed(exc: BaseException) -> InferenceFailed:
    """ModelArts' MR.0105 answer for an exception out of service.inference().

    A StepFailed is judged by the user code's exception (its __cause__); anything else by itself.
    """
    if isinstance(exc, StepFailed):
        return InferenceFailed(str(exc), http_status=client_or_server(exc.__cause__))
    return InferenceFailed(f"{type(exc).__name__}: {exc}", http_status=client_or_server(exc))


def client_or_server(exc: Any) -> int:
    """400 for the exceptions ModelArts blames on the request, else 500."""
    return 400 if isinstance(exc, CLIENT_ERRORS) else 500
