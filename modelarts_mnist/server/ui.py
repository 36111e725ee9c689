"""The prediction page: a Flask blueprint mounted at /ui, plus the preview of what the model sees."""
from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flask import Blueprint, Response, jsonify, request
from PIL import Image

from ..errors import InferenceFailed, InvalidInput, MnistSdkError

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
FIELD = "images"
SIDE = 28
DETAIL_LIMIT = 300


def create_ui_blueprint(model_info: Callable[[], dict[str, Any]],
                        preprocess: Callable[[dict], dict] | None = None) -> Blueprint:
    """Build the /ui blueprint: the page, its static files, /ui/model.json and /ui/preview.

    create_app registers it as::

        app.register_blueprint(create_ui_blueprint(
            lambda: describe_model(config.model_dir, service), service._preprocess))

    Args:
        model_info: returns the JSON served at GET /ui/model.json (see info.describe_model).
        preprocess: the service's `_preprocess`; POST /ui/preview runs only it on an upload so the
            page shows the 28x28 image the model is given. Without it the preview answers 404.
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
        return jsonify({"images": preview_images(request.files.getlist(FIELD), preprocess)})

    bp.register_error_handler(MnistSdkError, render_error)
    return bp


def preview_images(files: list, preprocess: Callable[[dict], dict]) -> list[dict[str, Any]]:
    """Feed files to preprocess in ModelArts' multipart shape; describe each model input image."""
    if not files:
        raise InvalidInput(f"preview: no file in the multipart field '{FIELD}'")
    names = [f.filename or f"{FIELD}-{n}" for n, f in enumerate(files)]
    data = {FIELD: {name: io.BytesIO(f.read()) for name, f in zip(names, files)}}
    try:
        arrays = to_squares(preprocess(data))
    except MnistSdkError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        # The same exceptions make POST / answer 400 (ModelArts' rule for KeyError/TypeError).
        raise InvalidInput(f"preview: {error}") from error
    except Exception as error:
        raise InferenceFailed(f"preview: preprocessing failed: {error}") from error
    return [describe_square(name, square) for name, square in zip(names, arrays)]


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


def render_error(error: MnistSdkError) -> Response:
    """ModelArts-shaped error body, with the readable reason in X-Error-Detail."""
    response = jsonify(error.to_dict())
    response.status_code = error.http_status
    # Headers are latin-1 on the wire: keep the detail to one ASCII line.
    detail = " ".join(str(error).split()).encode("ascii", "backslashreplace").decode("ascii")
    response.headers["X-Error-Detail"] = detail[:DETAIL_LIMIT]
    if error.http_status >= 500:
        logger.error("preview failed", exc_info=error)
    return response
