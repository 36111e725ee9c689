"""The service's answers: JSON encoded by a kept encoder, plain ones handed to WSGI without werkzeug's rework."""
from __future__ import annotations

import json
from typing import Any, Iterable

from flask import Response
from flask.json.provider import DefaultJSONProvider

# Headers werkzeug rewrites on the way out (made absolute URLs, IRIs encoded).
REWRITTEN = ("location", "content-location")


class ServiceResponse(Response):
    """Flask's Response, handed to the server without a copy of its headers when nothing would change.

    werkzeug's get_wsgi_response copies the headers, scans them for Location and Content-Length,
    and wraps the body in a ClosingIterator: ~10 us of the ~100 us Flask spent on a request. For
    a plain answer (see is_plain) every one of those steps leaves the answer as it is.
    """

    def get_wsgi_response(self, environ: dict[str, Any]) -> tuple[Iterable[bytes], str, list[tuple[str, str]]]:
        if self.is_plain(environ):
            return self.response, self.status, self.headers.to_wsgi_list()  # type: ignore[return-value]
        return super().get_wsgi_response(environ)

    def is_plain(self, environ: dict[str, Any]) -> bool:
        """True for a body of bytes in a list, its Content-Length set, no header werkzeug rewrites,
        no close callback, a status that carries a body, and not an answer to HEAD."""
        status = self.status_code
        if (not 200 <= status < 300 or status == 204 or self.direct_passthrough
                or environ.get("REQUEST_METHOD") == "HEAD" or getattr(self, "_on_close", None) != []):
            return False
        body = self.response
        if type(body) is not list:
            return False
        for chunk in body:  # loops, not all()/any() over generators: this runs for every answer
            if type(chunk) is not bytes:
                return False
        sized = False
        for name, _ in self.headers:
            lowered = name.lower()
            if lowered == "content-length":
                sized = True
            elif lowered in REWRITTEN:
                return False
        return sized


class ServiceJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider; a compact answer is encoded by one JSONEncoder kept per settings.

    json.dumps with keyword arguments builds a new encoder for every call. The settings stay
    attributes, as Flask documents them: a change to one makes a new encoder on the next answer.
    """

    def __init__(self, app: Any):
        super().__init__(app)
        self.kept: tuple[tuple, json.JSONEncoder] | None = None  # (the settings it was made for, the encoder)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if (self.compact is None and self._app.debug) or self.compact is False:
            return super().response(*args, **kwargs)  # indented: as Flask writes it
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(f"{self.encoder().encode(obj)}\n", mimetype=self.mimetype)

    def encoder(self) -> json.JSONEncoder:
        """The encoder json.dumps would make for the compact answer under the current settings."""
        settings = (self.default, self.ensure_ascii, self.sort_keys)
        if self.kept is None or self.kept[0] != settings:
            self.kept = settings, json.JSONEncoder(default=self.default, ensure_ascii=self.ensure_ascii,
                                                   sort_keys=self.sort_keys, separators=(",", ":"))
        return self.kept[1]
