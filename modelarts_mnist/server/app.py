"""The local online service: ModelArts' inference API (`POST /`), `/health`, and the /ui page."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from flask import Flask, Request, Response, redirect, request
from werkzeug.exceptions import MethodNotAllowed

from ..errors import MnistSdkError, ModelNotReady
from ..loader import inference_failed
from .admission import ADMITTED_KEY, Admission
from .errors import register_error_handlers
from .headers import add_security_headers
from .info import describe_model
from .loading import WARMUP_KEY, ModelSlot, prepare_engine, warm_up
from .requests import buffer_unsized_body, parse_request
from .routing import ServiceFlask
from .ui import create_ui_blueprint

SLOT_KEY = "modelarts_mnist.slot"
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass
class ServeConfig:
    """How the service runs; read once when the app is built, never per request."""

    model_dir: Path | None = None
    model_name: str = "mnist"
    max_body_bytes: int = 12 * 1024 * 1024  # ModelArts' API gateway limit
    auth_token: str | None = None
    load_in_background: bool = True  # False: create_app returns only once the model is warm
    tf_threads: int | None = None  # TensorFlow intra/inter-op pool size; None keeps TF's default
    ready_gate: Callable[[], bool] | None = None  # also required for /health 200 (gunicorn: all workers warm)
    runtime: str | None = None  # the ModelArts engine whose environment runs the model side (None: this process)
    engine_python: Path | None = None  # that environment's interpreter, dependencies included
    # The longest one request may run in the app before the client gets a 504 and the worker is replaced.
    time_budget_seconds: float = 10.0
    loopback_only: bool = False  # bound to loopback: refuse Host names of other machines (DNS rebinding)


def create_app(service: Any = None, config: ServeConfig | None = None, *,
               loader: Callable[[ServeConfig], Any] | None = None) -> Flask:
    """Build the app around `service`, or around the package in config.model_dir (loaded by loader)."""
    config = config or ServeConfig()
    app = ServiceFlask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # ModelArts answers UTF-8 as is
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the order user code chose
    slot = app.extensions[SLOT_KEY] = ModelSlot(service)
    register_error_handlers(app)
    add_security_headers(app)
    add_guards(app, config)
    add_routes(app, slot, config.ready_gate)
    app.register_blueprint(create_ui_blueprint(
        partial(describe_service, config, slot), lambda data: slot.get()._preprocess(data),
        auth_token=config.auth_token))
    if service is None:
        start_loading(app, slot, config, loader or load_package)
    return app


def add_guards(app: Flask, config: ServeConfig) -> None:
    """Refuse what the admission rule refuses before a body is read; app.admit is the same rule for the edge."""
    admit = app.admit = Admission(config.max_body_bytes, config.auth_token,  # type: ignore[attr-defined]
                                  config.loopback_only)
    limit = config.max_body_bytes

    @app.before_request
    def guard() -> None:
        environ = current_request().environ
        if ADMITTED_KEY not in environ:  # called directly (a test client), not through the edge
            admit(environ)
            if environ["REQUEST_METHOD"] == "POST":
                check_length(environ, limit)


def add_routes(app: Flask, slot: ModelSlot, ready_gate: Callable[[], bool] | None = None) -> None:
    """POST / (inference), GET /health, and GET / (browsers go to the page)."""

    @app.post("/")
    def predict() -> Response:
        """ModelArts' inference API: the request's data through the service, answered as JSON."""
        current = current_request()
        service = slot.get(warming=WARMUP_KEY in current.environ)
        return app.json.response(run_inference(service, parse_request(current)))

    @app.get("/health")
    def health() -> Response:
        """200 once the model is loaded and warmed up (in every worker), 503 before."""
        slot.get()
        if ready_gate is not None and not ready_gate():
            raise ModelNotReady("other workers are still loading the model; retry shortly")
        return app.json.response({"health": "true"})

    @app.get("/")
    def root() -> Response:
        """Browsers are sent to the prediction page; other GETs get ModelArts' 405."""
        if wants_html(request):
            return redirect("/ui/", 302)
        raise MethodNotAllowed(["POST"], "GET / is not an API: POST an image to / (or open /ui/)")


def run_inference(service: Any, data: dict[str, Any]) -> Any:
    """service.inference(data); a runtime StepFailed or raw exception becomes InferenceFailed (400/500)."""
    try:
        return service.inference(data)
    except MnistSdkError:
        raise
    except Exception as exc:  # user code (or an injected fake) raising: ModelArts' MR.0105 rule
        raise inference_failed(exc) from exc


def check_length(environ: dict[str, Any], limit: int) -> None:
    """Buffer a body sent without Content-Length (chunked), PayloadTooLarge once it grows past limit."""
    if not environ.get("CONTENT_LENGTH") and "wsgi.input_terminated" in environ:
        buffer_unsized_body(environ, limit)


def current_request() -> Request:
    """The request object itself: each attribute read through Flask's proxy costs ~2 us, ~25 per POST."""
    return request._get_current_object()  # type: ignore[attr-defined]


def wants_html(req: Request) -> bool:
    """True when the client names HTML explicitly (a browser), not via */* (curl)."""
    return any(kind in HTML_TYPES and quality > 0 for kind, quality in req.accept_mimetypes)


def describe_service(config: ServeConfig, slot: ModelSlot) -> dict[str, Any]:
    """What /ui/model.json shows: the package's description, or just the name for injected services."""
    if config.model_dir is None:
        return {"model_name": config.model_name, "ready": slot.ready, "engine": describe_engine(config, None)}
    service = slot.service if slot.ready else None
    return {**describe_model(config.model_dir, service), "ready": slot.ready,
            "engine": describe_engine(config, service)}


def describe_engine(config: ServeConfig, service: Any) -> dict[str, Any]:
    """Which engine answers: a ModelArts runtime's environment, or this process (with their versions).

    In this process, a TfServingBaseService also says whether LiteRT or TensorFlow runs its model,
    and why TensorFlow when it does (serving, litert, fallback_reason).
    """
    import platform
    import sys

    versions = getattr(service, "versions", None)
    if config.runtime:
        return {"runtime": config.runtime, **(versions if isinstance(versions, dict) else {})}
    tf = sys.modules.get("tensorflow")
    describe = getattr(service, "describe_engine", None)
    model_engine = describe() if callable(describe) else {}
    return {"runtime": "local", "python": platform.python_version(),
            "tensorflow": getattr(tf, "__version__", None),
            **(model_engine if isinstance(model_engine, dict) else {})}


def start_loading(app: Flask, slot: ModelSlot, config: ServeConfig,
                  loader: Callable[[ServeConfig], Any]) -> None:
    """Load and warm up the model, in the background or before returning (then failures raise)."""
    load, warm = partial(loader, config), partial(warm_up, app, config.auth_token)
    if config.load_in_background:
        slot.fill_in_background(load, warm)
        return
    slot.fill(load, warm)
    if slot.error is not None:
        raise slot.error


def load_package(config: ServeConfig) -> Any:
    """The service of the package in config.model_dir, its engine (LiteRT or TensorFlow) made ready first."""
    if config.model_dir is None:
        raise ValueError("ServeConfig.model_dir is required when no service is given")
    if config.engine_python is not None:  # the model side runs in the engine's interpreter; no TF here
        from ..remote import RemoteService

        return RemoteService(config.engine_python, config.model_dir, config.model_name)
    prepare_engine(config.model_dir, config.tf_threads)  # LiteRT or TensorFlow: see model_service.lite_engine
    from ..loader import load_service

    return load_service(config.model_dir, config.model_name)
