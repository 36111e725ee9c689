"""parse_request: multipart, form and JSON bodies into ModelArts' data shape; everything else MR.0101."""
from __future__ import annotations

import io
import json

import pytest
from flask import Flask
from flask import request as flask_request
from werkzeug.http import parse_options_header
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from modelarts_mnist.errors import InvalidInput, PayloadTooLarge
from modelarts_mnist.server.requests import COMMON_FORM_TYPE, buffer_unsized_body, parse_request, read_body


def make_request(**kwargs) -> Request:
    """A werkzeug Request built from EnvironBuilder arguments."""
    return Request(EnvironBuilder(method="POST", **kwargs).get_environ())


def test_multipart_file_becomes_filename_to_bytesio():
    data = parse_request(make_request(data={"images": (io.BytesIO(b"PNGDATA"), "7.png")}))
    assert list(data) == ["images"]
    assert list(data["images"]) == ["7.png"]
    assert isinstance(data["images"]["7.png"], io.BytesIO)
    assert data["images"]["7.png"].read() == b"PNGDATA"


def test_several_files_in_one_field_keep_order_and_a_duplicate_name_overwrites():
    files = [(io.BytesIO(b"a"), "blob"), (io.BytesIO(b"b"), "2.png"), (io.BytesIO(b"c"), "blob")]
    data = parse_request(make_request(data={"images": files}))
    assert list(data["images"]) == ["blob", "2.png"]
    assert [f.read() for f in data["images"].values()] == [b"c", b"b"]  # the last "blob" wins


def test_text_fields_and_query_parameters_are_merged():
    data = parse_request(make_request(query_string={"top": "3"},
                                      data={"images": (io.BytesIO(b"x"), "1.png"), "note": "hi"}))
    assert data["top"] == "3" and data["note"] == "hi"
    assert list(data["images"]) == ["1.png"]


@pytest.mark.parametrize("size", [10, 2_000_000], ids=["fast-parser", "werkzeug"])
def test_a_query_parameter_overrides_the_form_field_of_its_name(size):
    data = parse_request(make_request(query_string={"top": "5"},
                                      data={"images": (io.BytesIO(b"x" * size), "1.png"), "top": "3"}))
    assert data["top"] == "5" and list(data["images"]) == ["1.png"]


@pytest.mark.parametrize("query", ["", "top=3", "top=", "&", "top=1&top=2&n=%E4%B8%83", "a+b=c+d"])
def test_every_query_string_reaches_the_data_as_werkzeug_reads_it(query):
    request = make_request(query_string=query, data={"images": (io.BytesIO(b"x"), "1.png")})
    expected = {field: request.args.get(field) for field in request.args}
    data = parse_request(make_request(query_string=query, data={"images": (io.BytesIO(b"x"), "1.png")}))
    assert {field: value for field, value in data.items() if field != "images"} == expected


def test_a_json_list_body_is_passed_through():
    body = json.dumps([{"images": "aGVsbG8="}, [1, 2]]).encode()
    assert parse_request(make_request(data=body, content_type="application/json")) == [{"images": "aGVsbG8="}, [1, 2]]


def test_large_file_spooled_to_disk_is_read_into_bytesio():
    payload = b"\x00" * 2_000_000
    data = parse_request(make_request(data={"images": (io.BytesIO(payload), "big.png")}))
    assert isinstance(data["images"]["big.png"], io.BytesIO)
    assert data["images"]["big.png"].getvalue() == payload


def test_urlencoded_form_is_a_form():
    data = parse_request(make_request(data={"images": "not-a-file"}))
    assert data == {"images": "not-a-file"}


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/vnd.api+json"], ids=["plain", "charset", "suffix"])
def test_json_object_is_parsed(content_type):
    body = json.dumps({"images": "aGVsbG8=", "名": "字"}, ensure_ascii=False).encode()
    assert parse_request(make_request(data=body, content_type=content_type)) == {"images": "aGVsbG8=", "名": "字"}


BAD_BODIES = [
    (b"{not json", "application/json", "not valid JSON"),
    (b"", "application/json", "not valid JSON"),
    (b"\xff\xfe\xfa", "application/json", "not valid JSON"),
    (b"7", "application/json", "must be an object or a list"),
    (b"hello", "text/plain", "JSON or a form"),
    (b"", None, "JSON or a form"),
    (b"\x89PNG\r\n", "image/png", "JSON or a form"),
    (b"--x\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n\r\nAB",
     "multipart/form-data; boundary=x", "no fields"),
    (b"garbage without any boundary", "multipart/form-data", "no fields"),
    (b"", "multipart/form-data; boundary=x", "no fields"),
]


@pytest.mark.parametrize("body, content_type, message", BAD_BODIES,
                         ids=["invalid-json", "empty-json", "undecodable-json", "json-number", "text",
                              "empty-no-type", "raw-png", "truncated-multipart", "no-boundary",
                              "empty-multipart"])
def test_bad_bodies_raise_invalid_input_naming_the_problem(body, content_type, message):
    kwargs = {"data": body}
    if content_type:
        kwargs["content_type"] = content_type
    with pytest.raises(InvalidInput, match=message) as info:
        parse_request(make_request(**kwargs))
    assert info.value.http_status == 400 and info.value.error_code == "MR.0101"


def test_unreadable_body_raises_invalid_input():
    class Broken(io.RawIOBase):
        def readinto(self, buffer):
            raise TimeoutError("timed out")

    environ = EnvironBuilder(method="POST", data=b"0123456789", content_type="application/json").get_environ()
    environ["wsgi.input"] = Broken()
    request = Request(environ)
    with pytest.raises(InvalidInput, match="could not be read"):
        parse_request(request)


def edge_request(body: bytes, declared: int, content_type: str = "application/json") -> Request:
    """A Request as the edge hands it over: the body in a BytesIO, Content-Length as the client declared it."""
    environ = EnvironBuilder(method="POST", data=b"", content_type=content_type).get_environ()
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(declared)
    return Request(environ)


@pytest.mark.parametrize(("body", "declared", "position"), [
    (b'{"images": "abc"}', 17, 0),  # the edge's body, whole: taken without reading the stream
    (b'{"images": "abc"}', 12, 0),  # more bytes than declared: werkzeug reads the declared ones only
    (b'{"images": "abc"}', 17, 5),  # read partly already: werkzeug's (a disconnected client)
    (b'{"images": "abc"}', 20, 0),  # fewer bytes than declared: werkzeug's, as well
])
def test_read_body_returns_what_get_data_returns(body, declared, position):
    ours, theirs = edge_request(body, declared), edge_request(body, declared)
    for request in (ours, theirs):
        request.environ["wsgi.input"].seek(position)
    assert outcome(read_body, ours) == outcome(Request.get_data, theirs)


def outcome(read, request: Request) -> tuple[str, object]:
    """What reading the body gives: its bytes, or the type of exception raised."""
    try:
        return "body", read(request)
    except Exception as exc:
        return "raised", type(exc)


def test_read_body_leaves_the_stream_for_werkzeugs_form_parser():
    request = edge_request(b"a=1&b=2", 7, "application/x-www-form-urlencoded")
    assert read_body(request) == b"a=1&b=2"
    assert dict(request.form) == {"a": "1", "b": "2"}


class Trickle(io.RawIOBase):
    """A chunked body as a server hands it over: short reads, then EOF."""

    def __init__(self, body: bytes):
        self.body = body

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), 7, len(self.body))
        buffer[:n], self.body = self.body[:n], self.body[n:]
        return n


def test_unsized_body_within_limit_is_buffered_with_its_length():
    environ = {"wsgi.input": Trickle(b'{"images": "abc"}'), "wsgi.input_terminated": True,
               "HTTP_TRANSFER_ENCODING": "chunked"}
    buffer_unsized_body(environ, limit=100)
    assert environ["CONTENT_LENGTH"] == "17" and "HTTP_TRANSFER_ENCODING" not in environ
    assert environ["wsgi.input"].read() == b'{"images": "abc"}'


def test_unsized_body_over_limit_is_payload_too_large():
    environ = {"wsgi.input": Trickle(b"x" * 101), "wsgi.input_terminated": True}
    with pytest.raises(PayloadTooLarge):
        buffer_unsized_body(environ, limit=100)


BOUNDARIES = ["------------------------d74496d66958873e", "----WebKitFormBoundary7MA4YWxkTrZu0gW",
              "8bca7d60bd4b4207871f1526f557ca39", "a", "x" * 70, "x" * 71, "===============0123==", "b c",
              '"quoted"', "caf\u00e9", "a;b", "a,b", "A-b_c.d"]
SPELLINGS = ["multipart/form-data; boundary={}", "multipart/form-data;boundary={}", "Multipart/Form-Data; boundary={}",
             "multipart/form-data; boundary={}; charset=utf-8", "multipart/form-data;  boundary={}",
             "multipart/form-data; BOUNDARY={}", "multipart/form-data ; boundary={}"]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_the_common_form_type_is_read_as_werkzeug_reads_it(spelling, boundary):
    header = spelling.format(boundary)
    match = COMMON_FORM_TYPE.fullmatch(header)
    if match:
        mimetype, options = parse_options_header(header)
        assert ("multipart/form-data", match[1]) == (mimetype, options.get("boundary"))


def test_the_common_form_type_is_the_one_clients_send():
    assert all(COMMON_FORM_TYPE.fullmatch(f"multipart/form-data; boundary={b}") for b in BOUNDARIES[:5])


@pytest.mark.parametrize("size", [100, 101])
def test_a_text_field_over_the_apps_limit_is_refused_as_werkzeug_refuses_it(size):
    app = Flask(__name__)
    app.config["MAX_FORM_MEMORY_SIZE"] = 100
    body = (b'--zz\r\nContent-Disposition: form-data; name="note"\r\n\r\n' + b"x" * size + b"\r\n--zz--\r\n")
    with app.test_request_context("/", method="POST", data=body, content_type="multipart/form-data; boundary=zz"):
        if size <= 100:
            assert parse_request(flask_request._get_current_object()) == {"note": "x" * size}
        else:
            with pytest.raises(InvalidInput, match="text field over 100 bytes"):
                parse_request(flask_request._get_current_object())
