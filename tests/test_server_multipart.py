"""split_multipart: takes the bodies real clients send, agrees with werkzeug on them, and leaves the rest to it."""
from __future__ import annotations

import io
import random

import pytest
from urllib3 import encode_multipart_formdata
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from modelarts_mnist.client import multipart_body
from modelarts_mnist.server.multipart import read_part, split_multipart, split_part
from modelarts_mnist.server.requests import parse_request

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n-- not a boundary \r\n\r\n"


def werkzeug_view(body: bytes, boundary: str) -> tuple[list, list]:
    """(text fields, files) as werkzeug parses the body: the reference the fast path must match."""
    request = Request(EnvironBuilder(method="POST", input_stream=io.BytesIO(body), content_length=len(body),
                                     content_type=f"multipart/form-data; boundary={boundary}").get_environ())
    texts = list(request.form.items(multi=True))
    files = [(field, upload.filename, upload.read()) for field, upload in request.files.items(multi=True)]
    return by_field(texts), by_field(files)


def fast_view(body: bytes, boundary: str) -> tuple[list, list] | None:
    """The same view from split_multipart, or None when it declines."""
    parts = split_multipart(body, boundary)
    if parts is None:
        return None
    texts = [(p.name, p.content.decode("utf-8", "replace")) for p in parts if p.filename is None]
    files = [(p.name, p.filename, p.content) for p in parts if p.filename is not None]
    return by_field(texts), by_field(files)


def by_field(entries: list[tuple]) -> dict[str, list[tuple]]:
    """Entries grouped by field, in order within each field (werkzeug's MultiDict groups them too)."""
    grouped: dict[str, list[tuple]] = {}
    for entry in entries:
        grouped.setdefault(entry[0], []).append(entry[1:])
    return grouped


def werkzeug_encoded(data: dict) -> tuple[bytes, str]:
    environ = EnvironBuilder(method="POST", data=data).get_environ()
    return environ["wsgi.input"].read(), environ["CONTENT_TYPE"].split("boundary=")[1].strip('"')


def urllib3_encoded(fields: list) -> tuple[bytes, str]:
    body, content_type = encode_multipart_formdata(fields)
    return body, content_type.split("boundary=")[1]


def browser_encoded(filename: str) -> tuple[bytes, str]:
    """What Chrome's FormData sends: a WebKit boundary, a UTF-8 filename, a text field."""
    boundary = "----WebKitFormBoundaryx8Ha2TnPqV0bAAcd"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + PNG + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\n写 7\r\n'
            f"--{boundary}--\r\n").encode()
    return body, boundary


CLIENT_BODIES = {
    "sdk-client": lambda tmp: (multipart_body("b0undary", write(tmp / "7.png", PNG)), "b0undary"),
    "werkzeug": lambda tmp: werkzeug_encoded({"images": [(io.BytesIO(PNG), "a.png"), (io.BytesIO(b""), "b.png")],
                                              "note": "hi"}),
    "urllib3/requests": lambda tmp: urllib3_encoded([("images", ("7.png", PNG, "image/png")),
                                                     ("images", ("blob", PNG)), ("top", "3"), ("top", "4")]),
    "browser-utf8-name": lambda tmp: browser_encoded("数字 7.png"),
    "browser-empty-name": lambda tmp: browser_encoded(""),
}


def write(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("client", CLIENT_BODIES)
def test_client_bodies_take_the_fast_path_and_match_werkzeug(client, tmp_path):
    body, boundary = CLIENT_BODIES[client](tmp_path)
    fast = fast_view(body, boundary)
    assert fast is not None, "a common client's body fell back to werkzeug"
    assert fast == werkzeug_view(body, boundary)
    assert any(files for files in fast[1])


def part(name: str = "images", disposition: str | None = None, headers: str = "", content: bytes = b"x") -> bytes:
    disposition = disposition or f'form-data; name="{name}"; filename="a.png"'
    return f"Content-Disposition: {disposition}\r\n{headers}\r\n".encode() + content


def body_of(*parts: bytes, boundary: str = "zz", preamble: bytes = b"", epilogue: bytes = b"\r\n") -> bytes:
    return (preamble + b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
            + b"--" + boundary.encode() + b"--" + epilogue)


DECLINED = {
    "preamble": (body_of(part(), preamble=b"ignored\r\n"), "zz"),
    "rfc2231-filename": (body_of(part(disposition="form-data; name=\"images\"; filename*=UTF-8''%E6%95%B0.png")), "zz"),
    "escaped-quote": (body_of(part(disposition='form-data; name="images"; filename="a\\"b.png"')), "zz"),
    "folded-header": (body_of(part(headers="Content-Type: image/png;\r\n charset=x\r\n")), "zz"),
    "unknown-header": (body_of(part(headers="Content-Transfer-Encoding: binary\r\n")), "zz"),
    "repeated-header": (body_of(part(headers="Content-Type: a/b\r\nContent-Type: c/d\r\n")), "zz"),
    "text-with-charset": (body_of(part(disposition='form-data; name="n"', headers="Content-Type: text/plain; "
                                       "charset=iso-8859-1\r\n", content=b"\xe9")), "zz"),
    "latin1-header": (body_of(b'Content-Disposition: form-data; name="images"; filename="\xe9.png"\r\n\r\nx'), "zz"),
    "no-headers": (body_of(b"\r\nx"), "zz"),
    "truncated": (body_of(part())[:-6], "zz"),
    "boundary-prefix-in-content": (body_of(part(content=b"a\r\n--zzTOP")), "zz"),
    "whitespace-after-delimiter": (b"--zz  \r\n" + part() + b"\r\n--zz--\r\n", "zz"),
    "non-ascii-boundary": (body_of(part(), boundary="é").replace("é".encode(), b"?"), "é"),
    "empty-boundary": (body_of(part()), ""),
}


@pytest.mark.parametrize("case", DECLINED)
def test_unusual_bodies_are_left_to_werkzeug(case):
    body, boundary = DECLINED[case]
    assert split_multipart(body, boundary) is None


@pytest.mark.parametrize("case", DECLINED)
def test_parse_request_answers_unusual_bodies_as_werkzeug_does(case):
    body, boundary = DECLINED[case]
    environ = EnvironBuilder(method="POST", input_stream=io.BytesIO(body), content_length=len(body),
                             content_type=f"multipart/form-data; boundary={boundary}").get_environ()
    texts, files = werkzeug_view(body, boundary)
    if not texts and not files:
        pytest.raises(Exception, parse_request, Request(environ))
        return
    data = parse_request(Request(environ))
    for field, uploads in files.items():
        assert [f.getvalue() for f in data[field].values()] == [content for _, content in uploads]


def test_limits_on_parts_hand_over_to_werkzeug():
    body = body_of(part(), part(disposition='form-data; name="note"', content=b"x" * 100))
    assert split_multipart(body, "zz") is not None
    assert split_multipart(body, "zz", max_parts=1) is None


def test_random_bodies_agree_with_werkzeug_whenever_taken():
    """Fuzz: binary contents full of CRLFs and boundary look-alikes; the fast path must never disagree."""
    rng = random.Random(7)
    alphabet = [b"\r\n", b"--", b"zz", b"\r\n--zz", b"\r\n\r\n", b"a", b"\x00", b"\xff", "é".encode()]
    taken = 0
    for _ in range(400):
        parts = []
        for index in range(rng.randint(1, 4)):
            content = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            if rng.random() < 0.7:
                parts.append(part(f"f{index % 2}", f'form-data; name="f{index % 2}"; filename="{rng.choice(["", "a", "b c"])}"',
                                  "Content-Type: image/png\r\n" if rng.random() < 0.5 else "", content))
            else:
                parts.append(part(f"t{index}", f'form-data; name="t{index % 2}"', "", content))
        body = body_of(*parts)
        fast = fast_view(body, "zz")
        if fast is not None:
            taken += 1
            assert fast == werkzeug_view(body, "zz"), body
    assert taken > 100  # the fuzz exercised the fast path, not only the fallback


HEADS = [
    b'Content-Disposition: form-data; name="images"; filename="digit.png"\r\nContent-Type: image/png',
    b'Content-Disposition: form-data; name="images"; filename="digit.png"',
    b'Content-Disposition: form-data; name="note"',
    b'Content-Disposition: form-data; name="note"\r\nContent-Type: text/plain; charset=latin-1',
    b'Content-Disposition: form-data; name="note"\r\nContent-Type:',
    b'Content-Disposition: form-data; name="caf\xc3\xa9"; filename="\xe6\x95\xb0.png"',
    b'Content-Disposition: form-data; name="bad \xff"; filename="x.png"',
    b'Content-Disposition: form-data; name="images"; filename="a.png" ',
    b'content-disposition: form-data; name="images"; filename="a.png"',
    b'Content-Disposition:  form-data; name="images"',
    b'Content-Disposition: form-data; name="images"; filename="a\\".png"',
    b'Content-Disposition: form-data; name="images"; filename*=UTF-8\'\'a.png',
    b'Content-Type: image/png\r\nContent-Disposition: form-data; name="images"; filename="a.png"',
    b'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"',
    b'Content-Disposition: form-data; name="images"; filename="a.png"\r\nContent-Type: image/png\r\nX-Extra: 1',
    b'Content-Disposition: form-data; name="a\nb"; filename="c.png"',
    b'Content-Disposition: form-data; name=""; filename=""',
]


@pytest.mark.parametrize("content", [b"", b"x", b"\x89PNG\r\n\r\n\x00"])
@pytest.mark.parametrize("head", HEADS)
def test_the_common_head_is_read_as_the_line_by_line_reading_reads_it(head, content):
    piece = b"\r\n" + head + b"\r\n\r\n" + content
    assert split_part(piece) == read_part(piece)


def test_heads_one_edit_away_from_common_ones_are_read_alike_both_ways():
    """Fuzz: near misses of the common heads (a byte inserted, dropped or changed) must not read differently."""
    rng = random.Random(11)
    alphabet = b'\r\n";\\ =:-aZ\xc3\xa9\xff\t'
    for _ in range(5000):
        head = bytearray(rng.choice(HEADS[:3]))
        for _ in range(rng.randint(1, 2)):
            at, edit = rng.randrange(len(head) + 1), rng.randrange(3)
            if edit == 0:
                head[at:at] = bytes([rng.choice(alphabet)])
            elif edit == 1:
                del head[at:at + 1]
            else:
                head[at:at + 1] = bytes([rng.choice(alphabet)])
        piece = b"\r\n" + bytes(head) + b"\r\n\r\nbody"
        assert split_part(piece) == read_part(piece), piece
