"""The service's one token rule: the X-Auth-Token header must equal the configured token."""
from __future__ import annotations

import hashlib
import hmac
from typing import Mapping

from werkzeug.wrappers import Request

from ..errors import Unauthorized

TOKEN_HEADER = "X-Auth-Token"
TOKEN_ENVIRON_KEY = "HTTP_X_AUTH_TOKEN"  # the same header as a WSGI environ key


def check_token(req: Request, token: bytes) -> None:
    """Unauthorized unless the request's X-Auth-Token matches token (compared in constant time)."""
    check_environ_token(req.environ, token)


def check_environ_token(environ: Mapping[str, object], token: bytes) -> None:
    """check_token on a bare WSGI environ (before any request object exists)."""
    given = environ.get(TOKEN_ENVIRON_KEY)
    check_given_token(given if isinstance(given, str) else None, token)


def check_given_token(given: str | None, token: bytes) -> None:
    """Unauthorized unless given (a header value as WSGI hands it over) equals token."""
    if not given:
        raise Unauthorized(f"{TOKEN_HEADER} header is required")
    # WSGI decodes header bytes as latin-1: encoding back gives the bytes the client sent, so a
    # non-ASCII token sent as UTF-8 matches token.encode("utf-8").
    try:
        sent = given.encode("latin-1")
    except UnicodeEncodeError:  # not bytes any client sent: it cannot be the token
        raise Unauthorized(f"missing or wrong {TOKEN_HEADER}") from None
    # Digests have one length, so the comparison does not even reveal the token's length.
    if not hmac.compare_digest(hashlib.sha256(sent).digest(), hashlib.sha256(token).digest()):
        raise Unauthorized(f"missing or wrong {TOKEN_HEADER}")
