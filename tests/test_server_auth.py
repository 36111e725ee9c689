"""server/auth.py: the one token rule, on a request or a bare WSGI environ."""
from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from modelarts_mnist.errors import Unauthorized
from modelarts_mnist.server.auth import check_environ_token, check_given_token, check_token

TOKEN = "s3cret"


def environ_with(raw_header: bytes | None) -> dict:
    """A WSGI environ whose X-Auth-Token arrived as these raw bytes (WSGI decodes them as latin-1)."""
    environ = EnvironBuilder(path="/").get_environ()
    if raw_header is not None:
        environ["HTTP_X_AUTH_TOKEN"] = raw_header.decode("latin-1")
    return environ


@pytest.mark.parametrize("raw, reason", [(None, "required"), (b"", "required"), (b"wrong", "wrong"),
                                         (b"s3cret ", "wrong"), (b"s3cre", "wrong"), (b"S3CRET", "wrong"),
                                         (b"s3cret\x00", "wrong")],
                         ids=["absent", "empty", "wrong", "trailing-space", "prefix", "case", "nul"])
def test_anything_but_the_token_is_refused_with_a_reason(raw, reason):
    with pytest.raises(Unauthorized, match=reason):
        check_environ_token(environ_with(raw), TOKEN.encode())


def test_the_token_passes_on_a_request_and_on_an_environ():
    environ = environ_with(TOKEN.encode())
    check_environ_token(environ, TOKEN.encode())
    check_token(Request(environ), TOKEN.encode())


def test_a_non_ascii_token_matches_the_utf8_bytes_a_client_sends():
    token = "geheim-\u00fc\u540d"
    check_environ_token(environ_with(token.encode("utf-8")), token.encode("utf-8"))
    with pytest.raises(Unauthorized):
        check_environ_token(environ_with(token.encode("latin-1", "replace")), token.encode("utf-8"))


def test_a_value_outside_latin1_cannot_match_or_crash():
    with pytest.raises(Unauthorized):
        check_given_token("\u540d", "?".encode())
