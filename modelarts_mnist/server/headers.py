"""The security headers every answer carries, page and JSON alike."""
from __future__ import annotations

from flask import Flask, Response

# The page runs only its own script and style files: no inline script, no eval, no other hosts.
# data: and blob: images are the preview the service returns and the upload the page displays.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "connect-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
])
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),  # a JSON answer echoing input is never run as HTML or script
    ("X-Frame-Options", "DENY"),  # frame-ancestors for browsers that predate it: no clickjacking
    ("Referrer-Policy", "no-referrer"),
)


def add_security_headers(app: Flask) -> None:
    """Set SECURITY_HEADERS on every answer of app, errors and redirects included."""

    @app.after_request
    def secure(response: Response) -> Response:
        response.headers.extend(SECURITY_HEADERS)
        return response
