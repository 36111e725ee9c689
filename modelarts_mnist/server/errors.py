"""Every error the service answers, as JSON in ModelArts' shapes, never an HTML page."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import InferenceFailed, MnistSdkError, PayloadTooLarge

logger = logging.getLogger(__name__)

DETAIL_HEADER = "X-Error-Detail"
DETAIL_LIMIT = 300
TOO_LARGE = "Request entity too large"


def register_error_handlers(app: Flask) -> None:
    """Answer SDK errors, HTTP errors and anything unexpected as JSON."""
    app.register_error_handler(MnistSdkError, render_sdk_error)
    app.register_error_handler(HTTPException, render_http_error)
    app.register_error_handler(Exception, render_unexpected)


def render_sdk_error(error: MnistSdkError) -> Response:
    """The error's own body and status; its message goes in X-Error-Detail."""
    if isinstance(error, InferenceFailed):
        # ModelArts puts the user code's traceback in the service log; the cause chain holds it.
        logger.error("inference failed (%d): %s", error.http_status, error.message, exc_info=error)
    response = jsonify(error.to_dict())
    response.status_code = error.http_status
    response.headers[DETAIL_HEADER] = one_line(error.message)
    if isinstance(error, PayloadTooLarge):
        # The unread body is still on the socket: this connection cannot carry another request.
        response.headers["Connection"] = "close"
    return response


def render_http_error(error: HTTPException) -> Response:
    """404 as the gateway's APIG.0101, 413 as APIG.0201, other HTTP errors with their status."""
    if isinstance(error, RequestEntityTooLarge):
        return render_sdk_error(PayloadTooLarge(TOO_LARGE))
    code = "APIG.0101" if error.code == 404 else "MR.0101"
    response = jsonify({"error_code": code, "error_msg": error.name})
    response.status_code = error.code or 500
    for name, value in error.get_headers():  # keeps Allow on a 405
        if name.lower() != "content-type":
            response.headers[name] = value
    response.headers[DETAIL_HEADER] = one_line(error.description or error.name)
    return response


def render_unexpected(error: Exception) -> Response:
    """A logged generic 500: the body says nothing of the internals."""
    logger.error("unexpected error while answering a request", exc_info=error)
    failed = InferenceFailed("internal server error; see the service log")
    response = jsonify(failed.to_dict())
    response.status_code = 500
    response.headers[DETAIL_HEADER] = failed.message
    return response


def one_line(text: str) -> str:
    """A header-safe single ASCII line of at most DETAIL_LIMIT characters."""
    line = " ".join(str(text).split())
    # Header values must be latin-1; escape the rest (a Chinese file name, say) rather than fail.
    line = line.encode("ascii", "backslashreplace").decode("ascii")
    return line if len(line) <= DETAIL_LIMIT else line[: DETAIL_LIMIT - 3] + "..."
