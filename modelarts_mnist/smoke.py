"""Smoke requests built from config.json's declared request schema, and the comparison of two answers.

`check` sends them to the package loaded here and, with `--runtime`, to the package loaded inside a
ModelArts engine's environment; both answers must be JSON-encodable, and equal to each other.
"""
from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

FLOAT_TOLERANCE = 1e-4     # between two engines' float scores (float32 arithmetic in another order)
ROUNDED_TOLERANCE = 1.5e-3  # between two "%.3f" renderings of such scores (one may round the other way)
DEFAULT_API = {"request": {"Content-type": "multipart/form-data",
                           "data": {"type": "object", "properties": {"images": {"type": "file"}}}}}


@dataclass(frozen=True)
class SmokeRequest:
    """One generated request: a name for messages, and a factory of the data `_preprocess` receives."""

    name: str
    make: Callable[[], Any]


@lru_cache(maxsize=None)
def sample_images() -> dict[str, bytes]:
    """A 28x28 PNG digit (MNIST-like) and a 120x96 JPEG 'photo' of one (dark ink on light paper)."""
    from PIL import Image, ImageDraw

    digit = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(digit).line([(7, 7), (21, 7), (12, 22)], fill=255, width=3)
    photo = Image.new("RGB", (120, 96), (214, 210, 200))
    ImageDraw.Draw(photo).line([(35, 18), (85, 18), (52, 80)], fill=(40, 40, 48), width=9)
    found = {}
    for name, image, kind in (("digit.png", digit, "PNG"), ("photo.jpg", photo, "JPEG")):
        buffer = io.BytesIO()
        image.save(buffer, kind)
        found[name] = buffer.getvalue()
    return found


def smoke_requests(config: dict[str, Any]) -> list[SmokeRequest]:
    """Requests of each kind the config declares (its first API; ModelArts' default when none)."""
    apis = config.get("apis") if isinstance(config.get("apis"), list) else []
    api = apis[0] if apis and isinstance(apis[0], dict) else DEFAULT_API
    request = api.get("request") if isinstance(api.get("request"), dict) else DEFAULT_API["request"]
    content_type = str(request.get("Content-type", request.get("Content-Type", "application/json")))
    schema = request.get("data") if isinstance(request.get("data"), dict) else {}
    multipart = content_type.startswith("multipart")
    return [SmokeRequest(f"{content_type} with {image_name}", build(schema, image_name, multipart))
            for image_name in sample_images()]


def build(schema: dict[str, Any], image_name: str, multipart: bool) -> Callable[[], Any]:
    """A factory of the request data for `schema`, file fields carrying `image_name` (fresh files each call)."""
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}

    def make() -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, field in properties.items():
            field = field if isinstance(field, dict) else {}
            if field.get("type") == "file":
                content = sample_images()[image_name]
                data[name] = ({image_name: io.BytesIO(content)} if multipart
                              else base64.b64encode(content).decode("ascii"))
            else:
                data[name] = example_value(field, multipart)
        return data
    return make


def example_value(schema: dict[str, Any], as_text: bool = False) -> Any:
    """A value of the schema's type (form fields are text, as a browser would send them)."""
    kind = schema.get("type", "string")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        value = schema["enum"][0]
    elif kind in ("array", "list"):
        items = schema.get("items", schema.get("item", {}))
        items = items[0] if isinstance(items, list) and items else items
        value = [example_value(items if isinstance(items, dict) else {})]
    elif kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        value = {k: example_value(v if isinstance(v, dict) else {}) for k, v in props.items()}
    else:
        value = {"number": 1.0, "integer": 1, "boolean": True, "null": None}.get(kind, "1")
    if as_text and not isinstance(value, str):
        return json.dumps(value)
    return value


def json_problem(answer: Any) -> str:
    """Why `answer` cannot be sent as JSON (as ModelArts' runtime would fail), or ''."""
    try:
        json.dumps(answer, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        return f"the answer is not JSON-encodable ({exc}); ModelArts fails every such request"
    return ""


def difference(local: Any, remote: Any, path: str = "$") -> str:
    """Where two answers differ beyond float noise ('' when they agree)."""
    if isinstance(local, dict) and isinstance(remote, dict):
        if sorted(local) != sorted(remote):
            return f"{path}: keys {sorted(local)} here, {sorted(remote)} on the engine"
        return next((d for k in local if (d := difference(local[k], remote[k], f"{path}.{k}"))), "")
    if isinstance(local, list) and isinstance(remote, list):
        if len(local) != len(remote):
            return f"{path}: {len(local)} items here, {len(remote)} on the engine"
        return next((d for i, (a, b) in enumerate(zip(local, remote)) if (d := difference(a, b, f"{path}[{i}]"))), "")
    if close(local, remote):
        return ""
    return f"{path}: {local!r:.60} here, {remote!r:.60} on the engine"


def close(a: Any, b: Any) -> bool:
    """Equal, or numbers (or numeric strings) within the tolerance for their kind."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        try:
            return math.isclose(float(a), float(b), abs_tol=ROUNDED_TOLERANCE)
        except ValueError:
            return False
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
    return False
