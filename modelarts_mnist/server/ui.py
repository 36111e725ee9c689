"""The prediction page: a Flask blueprint mounted at /ui."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from flask import Blueprint, jsonify

STATIC_DIR = Path(__file__).with_name("static")


def create_ui_blueprint(model_info: Callable[[], dict[str, Any]],
                        preprocess: Callable[[dict], dict] | None = None) -> Blueprint:
    """Build the /ui blueprint: the page, its static files and /ui/model.json."""
    bp = Blueprint("ui", __name__, url_prefix="/ui", static_folder=str(STATIC_DIR),
                   static_url_path="/static")

    @bp.get("/")
    def page():
        """Serve the prediction page."""
        return bp.send_static_file("index.html")

    @bp.get("/model.json")
    def model_json():
        """Describe the served model."""
        return jsonify(model_info())

    return bp
