"""server/budget.py through parse_request: what a request may cost is checked before the work is done."""
from __future__ import annotations

import base64
import io
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from modelarts_mnist.errors import InvalidInput
from modelarts_mnist.server.budget import DEFAULT_LIMITS, MIB, Limits, image_cost
from modelarts_mnist.server.requests import parse_request


def make_request(**kwargs) -> Request:
    return Request(EnvironBuilder(method="POST", **kwargs).get_environ())


def json_request(body: bytes | str) -> Request:
    return make_request(data=body if isinstance(body, bytes) else body.encode(), content_type="application/json")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG declaring the size, bit depth and colour type, with a few bytes of pixel data only."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to declare another size."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (200, 10, 10)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("L", (4, 4)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen
    return bytes(data)


def tiff_declaring(width: int, height: int) -> bytes:
    return encode(Image.new("RGB", (width, height)), "TIFF", compression="tiff_deflate")


BOMB = png_header(4096, 4096, depth=16, colour=6)  # 4096x4096 16-bit RGBA: 128 MiB of pixels
DIGIT = encode(Image.fromarray(np.eye(28, dtype=np.uint8) * 255))


# --- JSON ----------------------------------------------------------------------------------------

def test_millions_of_empty_strings_are_refused_before_parsing():
    body = b"[" + b'"",' * 4_000_000 + b'""]'  # 12 MB
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="more than 262144 values"):
            parse_request(json_request(body))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(body)  # the body and its copy; json.loads would have built ~860 MB of objects


@pytest.mark.parametrize("item", ["0", "1.5", "NaN", "[]", "{}", "null", "true", '"x"'])
def test_too_many_values_of_any_kind_are_refused(item):
    body = "[" + ",".join([item] * 101) + "]"
    with pytest.raises(InvalidInput, match="more than 100 values"):
        parse_request(json_request(body), Limits(max_json_values=100))


def test_numbers_within_the_limit_pass_even_when_strings_hold_many_commas():
    body = json.dumps({"csv": ",".join(["1"] * 500), "pixels": [0.5] * 50})
    data = parse_request(json_request(body), Limits(max_json_values=100))
    assert data["pixels"] == [0.5] * 50 and data["csv"].count(",") == 499


def test_a_list_of_pixels_for_256_mnist_images_is_within_the_default_limit():
    body = json.dumps({"images": [[0] * 784] * 256})
    assert len(parse_request(json_request(body))["images"]) == 256


@pytest.mark.parametrize("depth", [65, 100_000], ids=["past-the-limit", "past-the-stack"])
def test_deep_nesting_is_a_400_naming_the_limit(depth):
    body = "[" * depth + "]" * depth
    with pytest.raises(InvalidInput, match="nested deeper than 64 levels") as caught:
        parse_request(json_request(body))
    assert caught.value.http_status == 400


def test_nesting_at_the_limit_passes():
    depth = DEFAULT_LIMITS.max_json_depth
    assert parse_request(json_request("[" * depth + "]" * depth))


# --- forms ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pad", [None, 10, 1_500_000], ids=["urlencoded", "multipart-fast-parser", "werkzeug"])
def test_a_form_with_too_many_parts_is_refused(pad):
    fields = {f"f{i}": "x" for i in range(1_000)}
    fields["pad"] = "p" if pad is None else (io.BytesIO(b"p" * pad), "pad.bin")
    with pytest.raises(InvalidInput, match="more than 1000 parts"):
        parse_request(make_request(data=fields))


def test_a_form_at_the_part_limit_passes():
    fields = {f"f{i}": "x" for i in range(1_000)}
    assert len(parse_request(make_request(data=fields))) == 1_000


# --- images --------------------------------------------------------------------------------------

def multipart(*files: tuple[str, bytes]) -> Request:
    return make_request(data={"images": [(io.BytesIO(content), name) for name, content in files]})


def test_a_png_declaring_huge_16_bit_pixels_is_refused_naming_it():
    with pytest.raises(InvalidInput) as caught:
        parse_request(multipart(("bomb.png", BOMB)))
    assert "4096x4096 16-bit RGBA PNG" in caught.value.message and "64 MiB limit per image" in caught.value.message


@pytest.mark.parametrize("data, size", [
    (jpeg_declaring(8000, 8000), "8000x8000 JPEG"),
    (gif_declaring(60000, 60000), "too large to decode: Image size .3600000000 pixels."),
    (gif_declaring(9000, 9000), "9000x9000 GIF"),
    (tiff_declaring(5000, 5000), "5000x5000 TIFF"),
    (png_header(30000, 30000), "30000x30000 8-bit gray PNG"),
], ids=["jpeg", "gif-past-pillow-cap", "gif", "tiff", "png-gray"])
def test_every_format_is_judged_by_its_declared_size(data, size):
    with pytest.raises(InvalidInput, match=size):
        parse_request(multipart(("x", data)))


@pytest.mark.parametrize("spell", [
    lambda b: base64.b64encode(b).decode(),
    lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
    lambda b: "DATA:image/png;base64," + base64.b64encode(b).decode(),
    lambda b: base64.encodebytes(b).decode(),  # MIME lines
], ids=["standard", "urlsafe-unpadded", "data-url", "line-wrapped"])
def test_base64_images_in_json_are_judged_too(spell):
    with pytest.raises(InvalidInput, match="4096x4096 16-bit RGBA PNG"):
        parse_request(json_request(json.dumps({"images": [spell(DIGIT), spell(BOMB)]})))


def test_the_images_of_a_request_share_one_budget():
    big = png_header(4096, 4096, colour=2)  # 64 MiB each as Pillow keeps RGB
    assert parse_request(multipart(("a.png", big), ("b.png", big)))
    with pytest.raises(InvalidInput, match="more than 128 MiB together"):
        parse_request(multipart(("a.png", big), ("b.png", big), ("c.png", DIGIT)))


def test_too_many_images_are_refused_before_any_is_decoded():
    files = [(f"{i}.png", DIGIT) for i in range(257)]
    with pytest.raises(InvalidInput, match="more than 256 images"):
        parse_request(multipart(*files))
    strings = [base64.b64encode(DIGIT).decode()] * 257
    with pytest.raises(InvalidInput, match="more than 256 images"):
        parse_request(json_request(json.dumps({"images": strings})))


def test_what_is_not_an_image_passes_untouched():
    csv = b"label,x\n7,0.5\n" * 1000
    request = make_request(data={"table": (io.BytesIO(csv), "t.csv"), "note": "aGVsbG8gd29ybGQ=" * 10})
    data = parse_request(request)
    assert data["table"]["t.csv"].read() == csv and data["note"] == "aGVsbG8gd29ybGQ=" * 10
    body = {"ids": ["user_0123456789abcdef"] * 300, "text": "P1 is not a netpbm header"}
    assert parse_request(json_request(json.dumps(body))) == body


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_every_frame_of_an_animation_counts(fmt):
    frames = [Image.new("RGB", (1024, 1024), (i, 0, 0)) for i in range(20)]  # 4 MiB each as Pillow keeps RGB
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], **({"lossless": True} if fmt == "WEBP" else {}))
    with pytest.raises(InvalidInput, match=f"1024x1024 {fmt} image .RGB, 20 frames. would decode to 80 MiB"):
        parse_request(multipart(("anim", buffer.getvalue())), Limits(max_image_bytes=64 * MIB))


def test_a_gif_of_many_tiny_frames_is_charged_its_first_frame_quickly():
    frames = [Image.new("P", (2, 2), i % 2) for i in range(20_000)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], optimize=False)
    assert image_cost(io.BytesIO(buffer.getvalue())) == (4, "a 2x2 GIF image (P)")  # no walk through 20,000 frames


def test_checked_files_are_handed_on_from_their_start():
    data = parse_request(multipart(("a.png", DIGIT), ("b.png", DIGIT)))
    assert [f.read() for f in data["images"].values()] == [DIGIT, DIGIT]


@pytest.mark.parametrize("mode, per_pixel", [("L", 1), ("RGB", 4), ("RGBA", 4), ("I;16", 2), ("P", 1)])
def test_the_png_fast_path_agrees_with_pillow(mode, per_pixel):
    data = encode(Image.new(mode, (30, 20)))
    assert image_cost(io.BytesIO(data))[0] == 30 * 20 * per_pixel
    # the same file as Pillow reads it, through the general path (BMP has no fast path)
    if mode in ("L", "RGB", "P"):
        assert image_cost(io.BytesIO(encode(Image.new(mode, (30, 20)), "BMP")))[0] == 30 * 20 * per_pixel


# --- through the service ---------------------------------------------------------------------------

class RecordingService:
    """Records whether inference() ran at all."""

    model_name = "recording"

    def __init__(self):
        self.calls = 0

    def inference(self, data):
        self.calls += 1
        return {"predicted_label": "1"}


@pytest.mark.parametrize("body, content_type, detail", [
    (b"[" + b'"",' * 300_000 + b'""]', "application/json", "more than 262144 values"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", "nested deeper than 64 levels"),
    (json.dumps({"images": base64.b64encode(BOMB).decode()}).encode(), "application/json", "16-bit RGBA PNG"),
], ids=["values", "depth", "base64-bomb"])
def test_the_service_answers_400_json_before_user_code_runs(body, content_type, detail):
    from modelarts_mnist.server.app import ServeConfig, create_app

    service = RecordingService()
    client = create_app(service, ServeConfig()).test_client()
    response = client.post("/", data=body, content_type=content_type)
    assert response.status_code == 400 and response.get_json()["erno"] == "MR.0101"
    assert detail in response.headers["X-Error-Detail"]
    assert service.calls == 0
    files = {"images": (io.BytesIO(BOMB), "bomb.png")}
    assert client.post("/", data=files, content_type="multipart/form-data").status_code == 400
    assert client.post("/", data={"images": (io.BytesIO(DIGIT), "d.png")}).status_code == 200
    assert service.calls == 1
