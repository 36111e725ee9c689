"""A fast parser for the multipart bodies clients really send (curl, browsers, requests).

Werkzeug's streaming parser costs ~100 us per small upload, as much as decoding the image and
running the model together. Here a body already in memory is split on its boundary with bytes
methods. Anything unusual (a preamble, folded or non-UTF-8 headers, RFC 2231 `filename*`, escaped
quotes, a text part with its own Content-Type, too many parts) returns None, and the caller hands
the body to werkzeug: the fast path never decides differently from werkzeug, it only decides sooner.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# The Content-Disposition every common client writes; other spellings go to werkzeug.
DISPOSITION = re.compile(r'form-data; name="([^"\\]*)"(?:; filename="([^"\\]*)")?\Z')
HEADERS = ("content-disposition", "content-type")  # what a part may carry here; others go to werkzeug
# That Content-Disposition, then perhaps a Content-Type, spelled as curl, browsers and requests write them.
COMMON_HEAD = re.compile(rb'\r\nContent-Disposition: form-data; name="([^"\\\r\n]*)"(?:; filename="([^"\\\r\n]*)")?'
                         rb'(\r\nContent-Type: [ -~]*)?\r\n\r\n')  # printable ASCII: it decodes as UTF-8


@dataclass(frozen=True)
class Part:
    """One part of a form: a text field (filename None) or a file."""

    name: str
    filename: str | None
    content: bytes


def count_parts(body: bytes, boundary: str) -> int:
    """How many parts a multipart body's delimiters announce, counted without splitting it."""
    if not boundary or not boundary.isascii():
        return 0
    delimiter = b"--" + boundary.encode("ascii")
    # Each part starts at a delimiter; the closing one (followed by "--") starts none.
    return max(0, body.count(delimiter) - body.count(delimiter + b"--"))


def split_multipart(body: bytes, boundary: str, *, max_parts: int | None = None) -> list[Part] | None:
    """The parts of a complete multipart body, or None when werkzeug must parse it."""
    if not boundary or not boundary.isascii():
        return None
    opening = b"--" + boundary.encode("ascii")
    if body.startswith(b"\r\n" + opening):  # an empty preamble (werkzeug's own encoder writes one)
        body = body[2:]
    if not body.startswith(opening):
        return None
    pieces = body[len(opening):].split(b"\r\n" + opening)
    if len(pieces) < 2 or not pieces[-1].startswith(b"--"):
        return None  # no closing delimiter: truncated, or parts werkzeug may read differently
    if max_parts is not None and len(pieces) - 1 > max_parts:
        return None
    parts = []
    for piece in pieces[:-1]:
        part = split_part(piece)
        if part is None:
            return None
        parts.append(part)
    return parts


def split_part(piece: bytes) -> Part | None:
    """One part from the bytes between two delimiters (`\\r\\nheaders\\r\\n\\r\\ncontent`).

    The head every common client writes is read in one match (reading it line by line was ~4% of
    a request's CPU); any other head is read by read_part, whose answer the match always agrees with.
    """
    common = COMMON_HEAD.match(piece)
    if common is None:
        return read_part(piece)
    name, filename, typed = common.groups()
    try:
        text_name, text_filename = name.decode("utf-8"), None if filename is None else filename.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if filename is None and typed is not None:
        return None  # a text part's charset would change how werkzeug decodes it
    return Part(text_name, text_filename, piece[common.end():])


def read_part(piece: bytes) -> Part | None:
    """split_part for any head: its lines read one by one."""
    head_end = piece.find(b"\r\n\r\n")
    if head_end < 0 and piece.endswith(b"\r\n"):  # empty content: the delimiter's own CRLF ends the headers
        head_end = len(piece) - 2
    if not piece.startswith(b"\r\n") or head_end < 0:
        return None
    try:
        lines = piece[2:head_end].decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        return None
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        key = name.lower()
        if not colon or key not in HEADERS or key in headers:  # folded, unknown or repeated
            return None
        headers[key] = value.strip()
    content_type = headers.get("content-type")
    match = DISPOSITION.match(headers.get("content-disposition", ""))
    if match is None or (match.group(2) is None and content_type is not None):
        return None  # a text part's charset would change how werkzeug decodes it
    return Part(match.group(1), match.group(2), piece[head_end + 4:])

