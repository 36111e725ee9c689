"""The prediction page: a Flask blueprint mounted at /ui, plus the preview of what the model sees."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flask import Blueprint, Response, jsonify, request
from PIL import Image

from ..errors import InferenceFailed, InvalidInput, MnistSdkError
from .auth import check_token
from .errors import render_sdk_error
from .requests import parse_request

STATIC_DIR = Path(__file__).with_name("static")
FIELD = "images"
# The page and its files reveal nothing and run nothing: a browser loads them before the user has
# typed the token. Everything else the blueprint serves needs it.
PUBLIC_ENDPOINTS = ("ui.page", "ui.static")
SIDE = 28


def create_ui_blueprint(model_info: Callable[[], dict[str, Any]],
                        preprocess: Callable[[dict], dict] | None = None, *,
                        auth_token: str | None = None) -> Blueprint:
    """Build the /ui blueprint: the page, its static files, /ui/model.json and /ui/preview.

    create_app registers it as (the service may still be loading, hence the late lookups)::

        app.register_blueprint(create_ui_blueprint(
            lambda: describe_model(config.model_dir, service),
            lambda data: service._preprocess(data), auth_token=config.auth_token))

    Args:
        model_info: returns the JSON served at GET /ui/model.json (see info.describe_model).
        preprocess: the service's `_preprocess`; POST /ui/preview runs only it on an upload so the
            page shows the 28x28 image the model is given. Without it the preview answers 404.
        auth_token: when set, every route but the page and its static files needs it in
            X-Auth-Token (the page asks the user for it); new routes are guarded by default.
    """
    bp = Blueprint("ui", __name__, url_prefix="/ui", static_folder=str(STATIC_DIR),
                   static_url_path="/static")

    @bp.get("/")
    def page() -> Response:
        """Serve the prediction page."""
        return bp.send_static_file("index.html")

    @bp.get("/model.json")
    def model_json() -> Response:
        """Describe the served model: name, version, signature, metrics."""
        return jsonify(model_info())

    @bp.post("/preview")
    def preview() -> Response:
        """Run only the service's preprocessing on the uploaded images; answer them as PNGs."""
        if preprocess is None:
            raise InvalidInput("preview: this service offers no preprocessing hook",
                               http_status=404, error_code="MR.0101")
        return jsonify({"images": preview_images(parse_request(request._get_current_object()), preprocess)})

    if auth_token:  # as the app decides: an empty token means none
        token = auth_token.encode("utf-8")

        @bp.before_request
        def guard() -> None:
            if request.endpoint not in PUBLIC_ENDPOINTS:
                check_token(request._get_current_object(), token)  # type: ignore[attr-defined]

    bp.register_error_handler(MnistSdkError, render_sdk_error)
    return bp


def preview_images(data: dict[str, Any], preprocess: Callable[[dict], dict]) -> list[dict[str, Any]]:
    """Run preprocess on a request's ModelArts data shape; describe each resulting model input."""
    files = data.get(FIELD) if isinstance(data, dict) else None  # a JSON list body has no fields
    if not isinstance(files, dict) or not files:
        raise InvalidInput(f"preview: no file in the multipart field '{FIELD}'")
    try:
        arrays = to_squares(preprocess(data))
    except MnistSdkError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        # The same exceptions make POST / answer 400 (ModelArts' rule for KeyError/TypeError).
        raise InvalidInput(f"preview: {type(error).__name__}: {error}") from error
    except Exception as error:
        raise InferenceFailed(f"preview: preprocessing failed: {type(error).__name__}: {error}") from error
    return [describe_square(name, square) for name, square in zip(files, arrays)]


def to_squares(model_input: dict[str, Any]) -> np.ndarray:
    """The single model input of a preprocess result as N 28x28 arrays."""
    if not isinstance(model_input, dict) or len(model_input) != 1:
        raise ValueError("preprocessing did not return exactly one named input")
    array = np.asarray(next(iter(model_input.values())), dtype=np.float64)
    if array.size == 0 or array.size % (SIDE * SIDE):
        raise ValueError(f"preprocessing returned shape {array.shape}, not N x {SIDE * SIDE}")
    return array.reshape(-1, SIDE, SIDE)


def describe_square(name: str, square: np.ndarray) -> dict[str, Any]:
    """One preprocessed image: its pixels (0-255, as fed to the model) and a PNG data URL."""
    pixels = np.clip(np.rint(square), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"filename": name, "png": url, "pixels": pixels.tolist(),
            "min": float(square.min()), "max": float(square.max())}
