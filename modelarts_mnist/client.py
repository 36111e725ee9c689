"""A stdlib-only client for a ModelArts-style online service: POST images, wait for /health."""
from __future__ import annotations

import json
import mimetypes
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .errors import MnistSdkError, ModelNotReady


def post_image(url: str, path: str | Path, token: str | None = None, timeout: float = 60.0) -> Any:
    """POST one image as multipart field `images`, as a ModelArts client does; return the JSON answer."""
    path = Path(path)
    boundary = uuid.uuid4().hex
    request = urllib.request.Request(url, data=multipart_body(boundary, path), method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    if token:
        request.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.headers.get("X-Error-Detail") or exc.read().decode("utf-8", "replace").strip()
        raise MnistSdkError(f"HTTP {exc.code}: {detail[:300]}", http_status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise MnistSdkError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}", http_status=502) from None
    except ValueError as exc:
        raise MnistSdkError(f"{url} answered something that is not JSON ({exc})", http_status=502) from None


def multipart_body(boundary: str, path: Path) -> bytes:
    """A multipart/form-data body holding one file in the field `images`."""
    filename = path.name.replace('"', "%22").replace("\r", "").replace("\n", "")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {mime}\r\n\r\n")
    return head.encode("utf-8") + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode("ascii")


def is_healthy(base_url: str, timeout: float = 2.0) -> bool:
    """Whether GET /health answers 200 right now."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_healthy(base_url: str, timeout: float = 60.0, alive=lambda: True) -> float:
    """Poll /health until 200; return the seconds waited. `alive()` false means the server died."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if is_healthy(base_url):
            return time.monotonic() - start
        if not alive():
            raise ModelNotReady(f"the service at {base_url} stopped before it became healthy")
        time.sleep(0.1)
    raise ModelNotReady(f"{base_url}/health did not answer 200 within {timeout:.0f} s")
