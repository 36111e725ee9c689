"""Turn an HTTP request into the `data` ModelArts hands to `_preprocess` (pure, no Flask app needed)."""
from __future__ import annotations

import io
import json
import re
from typing import Any

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request

from ..errors import InvalidInput, PayloadTooLarge
from .budget import DEFAULT_LIMITS, Limits, bound_json_values, check_data
from .multipart import Part, count_parts, split_multipart

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
CHUNK = 64 * 1024
FAST_PATH_BYTES = 1024 * 1024  # bodies up to this size are split in memory; larger ones stream via werkzeug
# The form Content-Type curl, browsers and requests send, read in one match: werkzeug's parse_options_header
# cost ~3% of a request's CPU. Other spellings (quoted, other case or characters) are werkzeug's to parse.
COMMON_FORM_TYPE = re.compile(r"multipart/form-data; ?boundary=([0-9A-Za-z_-]{1,70})")


def parse_request(request: Request, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | list[Any]:
    """The ModelArts data shape of a POST: a form as {field: {filename: BytesIO} | str}, or parsed JSON.

    Its cost is checked before user code sees it (budget.check_data): nesting, image count, pixels.

    Raises:
        InvalidInput: (MR.0101, 400) the body is neither a JSON object or list nor a form with fields,
            or it asks for more work than `limits` allow.
    """
    form = COMMON_FORM_TYPE.fullmatch(request.environ.get("CONTENT_TYPE", ""))
    mimetype = "multipart/form-data" if form else request.mimetype
    try:
        if not form and request.is_json:
            data = parse_json(read_body(request), limits)
        elif mimetype in FORM_TYPES:
            boundary = form[1] if form else request.mimetype_params.get("boundary", "")
            data = parse_form(request, limits, mimetype, boundary)
        else:
            raise InvalidInput(f"request body must be JSON or a form (multipart/form-data), "
                               f"got Content-Type {mimetype or 'none'!r}")
    except (OSError, ClientDisconnected) as exc:  # a body cut short or too slow to arrive
        raise InvalidInput(f"request body could not be read: {exc}") from exc
    check_data(data, limits)
    return data


def parse_json(body: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | list[Any]:
    """Parse a JSON body: an object, or a list, which the platform's runtime passes through as it is."""
    counter = bound_json_values(body, limits)  # before parsing: json.loads' objects cost ~50x the bytes
    try:
        data = json.loads(body, **(counter.hooks() if counter else {}))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # nesting past the interpreter's stack; check_data bounds the rest
        raise InvalidInput(f"JSON body is nested deeper than {limits.max_json_depth} levels") from exc
    if not isinstance(data, (dict, list)):
        raise InvalidInput(f"JSON body must be an object or a list, got {type(data).__name__}")
    return data


def parse_form(request: Request, limits: Limits, mimetype: str, boundary: str) -> dict[str, Any]:
    """Text fields, files as {field: {filename: BytesIO}}, then query parameters (which win)."""
    request.max_form_parts = limits.max_parts
    parts = split_small_form(request, limits.max_parts, mimetype, boundary)
    if parts is not None:
        texts = [(part.name, part.content.decode("utf-8", "replace")) for part in parts if part.filename is None]
        files = [(part.name, part.filename or part.name, io.BytesIO(part.content))
                 for part in parts if part.filename is not None]
    else:  # werkzeug: urlencoded forms, big bodies, and multipart spellings the fast parser leaves alone
        try:
            texts = list(request.form.items())
        except RequestEntityTooLarge as exc:  # werkzeug's word for too many parts or too big a text field
            raise InvalidInput(f"form has more than {limits.max_parts} parts, or a text field over "
                               f"{request.max_form_memory_size} bytes") from exc
        files = [(field, upload.filename or field, read_upload(upload))
                 for field, upload in request.files.items(multi=True)]
    if not texts and not files:
        raise InvalidInput("form body has no fields (is the multipart body complete, "
                           "with the boundary its Content-Type names?)")
    args = list(request.args.items()) if request.query_string else []  # no query: no parse (~3 us)
    return assemble_form(args, texts, files)


def split_small_form(request: Request, max_parts: int | None, mimetype: str, boundary: str) -> list[Part] | None:
    """The parts of a multipart body up to FAST_PATH_BYTES, or None (werkzeug parses the form).

    The body is read once: the parts a form body up to FAST_PATH_BYTES announces are counted on its
    bytes before anything is split (werkzeug counts bigger bodies as it streams them), then it is split.

    Raises:
        InvalidInput: such a body, multipart or urlencoded, announces more than max_parts parts.
    """
    multipart = mimetype == "multipart/form-data"
    if max_parts is None and not multipart:
        return None
    body = small_body(request)
    if body is None:
        return None
    if max_parts is not None:
        count = count_parts(body, boundary) if multipart else body.count(b"&") + 1  # urlencoded: joined by "&"
        if count > max_parts:
            raise InvalidInput(f"form has more than {max_parts} parts")
    if not multipart:
        return None
    parts = split_multipart(body, boundary, max_parts=max_parts)
    texts = [part for part in parts if part.filename is None] if parts else []
    if texts:  # only then is the limit read from the app's config
        limit = request.max_form_memory_size
        if limit is not None and any(len(part.content) > limit for part in texts):
            return None  # werkzeug refuses it, in its words
    return parts


def small_body(request: Request) -> bytes | None:
    """The body when it is at most FAST_PATH_BYTES (read once and kept for werkzeug's form parser), else None."""
    body = body_in_memory(request.environ)
    if body is not None:
        return body if len(body) <= FAST_PATH_BYTES else None
    length = request.content_length
    if length is None or length > FAST_PATH_BYTES:
        return None
    return request.get_data(cache=True)


def read_body(request: Request) -> bytes:
    """The whole body, as request.get_data() returns it (see body_in_memory)."""
    body = body_in_memory(request.environ)
    return body if body is not None else request.get_data(cache=False)


def body_in_memory(environ: dict[str, Any]) -> bytes | None:
    """A body the server holds in memory whole: the edge's BytesIO, unread, of the declared length.

    It is copied without being read, so werkzeug can still parse it: werkzeug's stream wrapping and
    its size check through current_app cost ~12 us a request, and the edge and the app's guard have
    checked the size. None for any other body (a chunked one among them), which werkzeug reads.
    """
    stream = environ.get("wsgi.input")
    declared = environ.get("CONTENT_LENGTH")
    if (type(stream) is not io.BytesIO or stream.tell() != 0 or not declared or not declared.isdigit()
            or "HTTP_TRANSFER_ENCODING" in environ):
        return None
    body = stream.getvalue()
    return body if len(body) == int(declared) else None


def assemble_form(args: list[tuple[str, str]], texts: list[tuple[str, str]],
                  files: list[tuple[str, str, io.BytesIO]]) -> dict[str, Any]:
    """Text fields (the first of each name), files grouped by field, then query parameters over them.

    As the platform's runtime: a file whose name the field already holds replaces it (last wins),
    and a query parameter replaces a form field of the same name.
    """
    data: dict[str, Any] = {}
    for field, value in texts:  # a repeated text field keeps its first value, as werkzeug's form does
        data.setdefault(field, value)
    for field, filename, content in files:
        group = data.get(field)
        if not isinstance(group, dict):
            group = data[field] = {}
        group[filename] = content  # a plain assignment, as there: the first's place, the last's content
    first: dict[str, str] = {}
    for field, value in args:  # a repeated parameter keeps its first value, as werkzeug's args do
        first.setdefault(field, value)
    data.update(first)
    return data


def read_upload(upload: FileStorage) -> io.BytesIO:
    """The upload as a BytesIO at position 0 (werkzeug spools big parts to a temporary file)."""
    stream = upload.stream
    if isinstance(stream, io.BytesIO):
        stream.seek(0)
        return stream
    return io.BytesIO(stream.read())


def buffer_unsized_body(environ: dict[str, Any], limit: int) -> None:
    """Read a body sent without Content-Length (chunked) into memory; PayloadTooLarge past limit.

    Werkzeug would silently cut such a body at the limit, turning a 413 into a parse error.
    """
    stream, parts, size = environ["wsgi.input"], [], 0
    while size <= limit:
        part = stream.read(CHUNK)
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise PayloadTooLarge("Request entity too large")
    body = b"".join(parts)
    for key in ("HTTP_TRANSFER_ENCODING", "wsgi.input_terminated"):
        environ.pop(key, None)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ["wsgi.input"] = io.BytesIO(body)
