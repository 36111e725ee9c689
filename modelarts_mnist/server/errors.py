"""Every error the service answers, as JSON in ModelArts' shapes, never an HTML page."""
from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from ..errors import InferenceFailed, MnistSdkError, ModelNotReady, PayloadTooLarge
from .loading import WARMUP_KEY
from .logs import ErrorLog

DETAIL_HEADER = "X-Error-Detail"
DETAIL_LIMIT = 300
TOO_LARGE = "Request entity too large"
LOG_KEY = "modelarts_mnist.error_log"
# ASCII control characters that survive the whitespace split (NUL, BEL, ESC, DEL...): gunicorn
# refuses a header holding one, and a log line holding one can fake or hide other lines.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NO_BODY = (204, 304)  # statuses whose answers carry no body at all


def register_error_handlers(app: Flask, error_log: ErrorLog | None = None) -> None:
    """Answer SDK errors, HTTP errors and anything unexpected as JSON, logged through error_log."""
    app.extensions[LOG_KEY] = error_log or ErrorLog()
    app.register_error_handler(MnistSdkError, render_sdk_error)
    app.register_error_handler(HTTPException, render_http_error)
    app.register_error_handler(Exception, render_unexpected)
    app.after_request(json_for_stray_answers)


def render_sdk_error(error: MnistSdkError) -> Response:
    """The error's own body and status; its message goes in X-Error-Detail."""
    detail = one_line(error.message)
    if error.http_status < 500:
        log_client_error(error.http_status, detail)
    elif not isinstance(error, ModelNotReady):  # 503 while loading is an answer, not a failure
        # ModelArts puts the user code's traceback in the service log; the cause chain holds it.
        log_server_error(error.http_status, detail, error)
    response = jsonify(error.to_dict())
    response.status_code = error.http_status
    response.headers[DETAIL_HEADER] = detail
    if isinstance(error, PayloadTooLarge):
        # The unread body is still on the socket: this connection cannot carry another request.
        response.headers["Connection"] = "close"
    return response


def render_http_error(error: HTTPException) -> Response:
    """404 as the gateway's APIG.0101, 413 as APIG.0201, other HTTP errors with their status."""
    if isinstance(error, RequestEntityTooLarge):
        return render_sdk_error(PayloadTooLarge(TOO_LARGE))
    status = error.code or 500
    detail = one_line(error.description or error.name)
    if status < 500:
        log_client_error(status, detail)
    else:
        log_server_error(status, detail, getattr(error, "original_exception", None) or error)
    response = jsonify(error_body(status, error.name))
    response.status_code = status
    for name, value in error.get_headers():  # keeps Allow on a 405
        if name.lower() != "content-type":
            response.headers[name] = value
    response.headers[DETAIL_HEADER] = detail
    return response


def render_unexpected(error: Exception) -> Response:
    """A logged generic 500: the body says nothing of the internals."""
    log_server_error(500, "unexpected error while answering", error)
    failed = InferenceFailed("internal server error; see the service log")
    response = jsonify(failed.to_dict())
    response.status_code = 500
    response.headers[DETAIL_HEADER] = one_line(failed.message)
    return response


def json_for_stray_answers(response: Response) -> Response:
    """Give a JSON body to redirects and errors made outside the handlers above.

    Flask hands routing redirects (`/ui` to `/ui/`, `//` merged to `/`) straight to werkzeug, which
    writes HTML; a plain redirect() does too. A redirect keeps its Location, made relative so the
    client's Host header is never echoed back.
    """
    status = response.status_code
    if status < 300 or status in NO_BODY or response.mimetype == "application/json":
        return response
    location = response.headers.get("Location")
    if location is not None and status < 400:
        parts = urlsplit(location)
        location = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        response.headers["Location"] = location
        body = {"location": location}
    else:
        body = error_body(status, HTTP_STATUS_CODES.get(status, "Unknown Error"))
    response.set_data(json.dumps(body))
    response.mimetype = "application/json"
    return response


def error_body(status: int, name: str) -> dict[str, str]:
    """The gateway's body for an HTTP error: APIG.0101 for a 404, MR.0101 otherwise."""
    return {"error_code": "APIG.0101" if status == 404 else "MR.0101", "error_msg": name}


def log_client_error(status: int, detail: str) -> None:
    """One line for a 4xx answer: what was asked, and why it was refused."""
    if WARMUP_KEY not in request.environ:  # warm-up reports its own answer, once
        error_log().client_error(status, f"{describe_request()}: {detail}")


def log_server_error(status: int, detail: str, error: BaseException) -> None:
    """The traceback of a 5xx answer, with what was asked."""
    if WARMUP_KEY not in request.environ:
        error_log().server_error(status, f"{describe_request()}: {detail}", error)


def describe_request() -> str:
    """The request's method and path as one safe line (the path is the client's, percent-decoded)."""
    return one_line(f"{request.method} {request.path}", limit=DETAIL_LIMIT // 2)


def error_log() -> ErrorLog:
    """The app's ErrorLog (one per app, so one per worker process)."""
    return current_app.extensions.setdefault(LOG_KEY, ErrorLog())


def one_line(text: str, limit: int = DETAIL_LIMIT) -> str:
    """A header-safe single line of printable ASCII of at most limit characters.

    Every header value or log line built from client input goes through here: whitespace runs
    (newlines, U+2028...) become one space, and other characters outside printable ASCII (NUL,
    DEL, C1 controls, a Chinese file name) are escaped as \\xNN or \\uNNNN.
    """
    # A prefix bounds the work on a huge message; only one padded with long blank runs loses its tail.
    line = " ".join(str(text)[: limit * 10].split())
    line = line.encode("ascii", "backslashreplace").decode("ascii")
    line = CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."
