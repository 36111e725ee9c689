"""model/customize_service.py: request shapes, decoding, every mode, MNIST geometry, answers."""
from __future__ import annotations

import base64
import importlib.util
import io
import struct
import sys
import time
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from model_service.errors import StepFailed
from PIL import Image

from modelarts_mnist.artifacts import INFERENCE_CODE, artifact_path
from modelarts_mnist.loader import inference_failed


@pytest.fixture(scope="module")
def cs():
    """The inference code as a module, loaded from its file like ModelArts does."""
    spec = importlib.util.spec_from_file_location("customize_service_under_test", artifact_path(INFERENCE_CODE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digit_bar(side=28):
    """A white-on-black 'one': a bar of full-intensity ink with soft edges, centred."""
    pixels = np.zeros((side, side), np.uint8)
    pixels[4:24, 12:16] = 255
    pixels[4:24, 11] = pixels[4:24, 16] = 90
    return pixels


def encode(image, fmt="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def preprocess(cs, payload):
    return cs.MnistService._preprocess(None, payload)["images"]


# --- request shapes -------------------------------------------------------------------------

def test_multipart_single_file_gives_one_row_of_raw_pixels(cs):
    png = encode(Image.fromarray(digit_bar()))
    batch = preprocess(cs, {"images": {"1.png": io.BytesIO(png)}})
    assert batch.dtype == np.float32 and batch.shape == (1, 784)
    assert np.array_equal(batch[0], digit_bar().ravel().astype(np.float32))


def test_multipart_several_files_keep_their_order(cs):
    one = encode(Image.fromarray(digit_bar()))
    seven = encode(Image.fromarray(digit_bar().T))
    batch = preprocess(cs, {"images": {"a.png": io.BytesIO(seven), "b.png": io.BytesIO(one)}})
    assert batch.shape == (2, 784)
    assert np.array_equal(batch[0], digit_bar().T.ravel()) and np.array_equal(batch[1], digit_bar().ravel())


@pytest.mark.parametrize("wrap", [
    lambda b: base64.b64encode(b).decode(),
    lambda b: [base64.b64encode(b).decode()] * 2,
    lambda b: "data:image/png;base64," + base64.b64encode(b).decode(),
    lambda b: base64.urlsafe_b64encode(b).decode(),
    lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
    lambda b: "DATA:image/png;base64," + base64.b64encode(b).decode(),
    lambda b: "Data:image/png;base64," + base64.urlsafe_b64encode(b).decode().rstrip("="),
    lambda b: base64.encodebytes(b).decode(),
    lambda b: {"b64": base64.b64encode(b).decode()},
    lambda b: {"raw.png": b},
], ids=["base64", "list", "data-url", "urlsafe", "urlsafe-unpadded", "upper-case-data-url",
        "mixed-case-data-url-unpadded", "line-wrapped", "b64-dict", "raw-bytes"])
def test_json_and_byte_shapes(cs, wrap):
    png = encode(Image.fromarray(digit_bar()))
    batch = preprocess(cs, {"images": wrap(png)})
    assert np.array_equal(batch[0], digit_bar().ravel())


@pytest.mark.parametrize("payload, error, text", [
    ({"image": "x"}, KeyError, "no 'images' field (got ['image'])"),
    ("not a dict", KeyError, "no 'images' field (got str)"),
    ({"images": {}}, TypeError, "no image in the request"),
    ({"images": []}, TypeError, "no image in the request"),
    ({"images": 42}, TypeError, "images: expected an image file, got int"),
    ({"images": "bm90IGFuIGltYWdl"}, TypeError, "images: not a readable PNG"),
    ({"images": "abcde"}, TypeError, "images: not valid base64"),
    ({"images": "ab$cd"}, TypeError, "images: not valid base64"),
], ids=["wrong-field", "not-a-dict", "empty-dict", "empty-list", "number", "base64-not-image", "bad-base64-length",
        "bad-base64-character"])
def test_bad_requests_raise_key_or_type_error(cs, payload, error, text):
    with pytest.raises(error) as caught:
        preprocess(cs, payload)
    assert text in str(caught.value)


@pytest.mark.parametrize("wrap", [list, lambda files: {str(i): f for i, f in enumerate(files)}], ids=["list", "dict"])
def test_too_many_images_is_refused_before_any_is_decoded(cs, wrap):
    calls = []

    class Counted(io.BytesIO):
        def read(self, *args):
            calls.append(1)
            return super().read(*args)

    with pytest.raises(TypeError, match="257 images in one request, at most 256"):
        preprocess(cs, {"images": wrap([Counted(b"x") for _ in range(257)])})
    assert not calls


def test_millions_of_strings_are_refused_without_building_anything(cs):
    strings = [""] * 4_000_000
    tracemalloc.start()
    try:
        with pytest.raises(TypeError, match="4000000 images in one request"):
            preprocess(cs, {"images": strings})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


# --- decoding --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF"])
def test_lossless_formats_decode_exactly(cs, fmt):
    data = encode(Image.fromarray(digit_bar()), fmt)
    assert np.array_equal(cs.decode_image("x", data), digit_bar())


def test_jpeg_decodes_close(cs):
    data = encode(Image.fromarray(digit_bar()), "JPEG", quality=95)
    assert np.abs(cs.decode_image("x.jpg", data).astype(int) - digit_bar()).mean() < 4


def test_other_formats_are_refused(cs):
    data = encode(Image.fromarray(digit_bar()), "TIFF")
    with pytest.raises(TypeError, match="x.tif: not a readable PNG, JPEG, BMP or GIF image"):
        cs.decode_image("x.tif", data)


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width, height, depth=8, colour=0):
    """A PNG claiming the given size, with a few bytes of pixel data only."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def split_chunks(png):
    """[(kind, body)] of a PNG file's chunks."""
    chunks, position = [], 8
    while position < len(png):
        length, kind = struct.unpack_from(">I4s", png, position)
        chunks.append((kind, png[position + 8:position + 8 + length]))
        position += 12 + length
    return chunks


def join_chunks(chunks):
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, body) for kind, body in chunks)


def split_stream(png, parts=3):
    """The same PNG with its pixel stream spread over several IDAT chunks."""
    chunks = split_chunks(png)
    stream = b"".join(body for kind, body in chunks if kind == b"IDAT")
    step = -(-len(stream) // parts)
    idats = [(b"IDAT", stream[i:i + step]) for i in range(0, len(stream), step)]
    return join_chunks([chunks[0]] + idats + [(b"IEND", b"")])


def with_chunk(png, kind, body, after_stream=False):
    """The PNG with one more chunk, before its pixels or just after them."""
    chunks = split_chunks(png)
    at = len(chunks) - 1 if after_stream else 1
    return join_chunks(chunks[:at] + [(kind, body)] + chunks[at:])


def noise_digit(size=(28, 28), seed=0):
    """Random gray levels: Pillow's encoder picks every PNG filter for rows like these."""
    return np.random.default_rng(seed).integers(0, 256, size[::-1]).astype(np.uint8)


def filtered_png(pixels, filters):
    """An 8-bit gray PNG of pixels whose rows use the PNG filter types `filters` (0-4) in turn."""
    height, width = pixels.shape
    prior, stream = np.zeros(width, int), b""
    for y, row in enumerate(pixels.astype(int)):
        kind = filters[y % len(filters)]
        left, corner = np.concatenate(([0], row[:-1])), np.concatenate(([0], prior[:-1]))
        guess = left + prior - corner
        paeth = np.where((abs(guess - left) <= abs(guess - prior)) & (abs(guess - left) <= abs(guess - corner)), left,
                         np.where(abs(guess - prior) <= abs(guess - corner), prior, corner))
        predicted = [0, left, prior, (left + prior) // 2, paeth][kind]
        stream += bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes()
        prior = row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return join_chunks([(b"IHDR", header), (b"IDAT", zlib.compress(stream)), (b"IEND", b"")])


def pillow_gray(cs, name, data):
    """What the Pillow path of the service makes of a file."""
    return cs.read_gray(name, cs.open_with_pillow(name, io.BytesIO(data)))


PLAIN_PNGS = {
    "mnist-digit": lambda: encode(Image.fromarray(digit_bar())),
    "all-filters": lambda: encode(Image.fromarray(noise_digit())),
    "each-filter-first": lambda: filtered_png(noise_digit(), (4, 3, 2, 1, 0)),
    "optimized": lambda: encode(Image.fromarray(noise_digit(seed=1)), optimize=True),
    "uncompressed": lambda: encode(Image.fromarray(noise_digit(seed=2)), compress_level=0),
    "with-dpi": lambda: encode(Image.fromarray(digit_bar()), dpi=(300, 300)),
    "split-stream": lambda: split_stream(encode(Image.fromarray(noise_digit(seed=3)))),
    "gamma-after-pixels": lambda: with_chunk(encode(Image.fromarray(digit_bar())), b"gAMA", b"\0\0\xb1\x8f", True),
    "one-pixel": lambda: encode(Image.fromarray(np.full((1, 1), 200, np.uint8))),
    "wide": lambda: encode(Image.fromarray(noise_digit((97, 13)))),
    "large": lambda: encode(Image.fromarray(noise_digit((700, 500)))),
}


@pytest.mark.parametrize("case", list(PLAIN_PNGS))
def test_plain_gray_pngs_take_the_one_call_decoder_and_decode_as_pillow_does(cs, case):
    data = PLAIN_PNGS[case]()
    assert isinstance(cs.open_image(case, data), cs.GrayPng)
    assert isinstance(cs.open_image(case, io.BytesIO(data)), cs.GrayPng)
    gray = cs.decode_image(case, data)
    assert np.array_equal(gray, pillow_gray(cs, case, data))
    if case != "large":
        assert np.array_equal(gray, np.asarray(Image.open(io.BytesIO(data))))


def test_the_small_gray_pngs_of_a_request_decode_together_as_each_alone(cs):
    filters = (4, 3, 2, 1, 0)  # each image's first row filtered by another type, against the row above
    files = [filtered_png(noise_digit(seed=i), filters[i:] + filters[:i]) for i in range(4)]
    files += [encode(Image.fromarray(digit_bar())), encode(Image.fromarray(noise_digit((28, 40), 5))),
              encode(Image.fromarray(noise_digit((30, 28), 6))), encode(Image.fromarray(noise_digit((30, 28), 7))),
              encode(Image.fromarray(noise_digit((13, 9), 8))), encode(Image.fromarray(np.dstack([digit_bar()] * 3)))]
    opened = [(f"{i}.png", cs.open_image(f"{i}.png", data)) for i, data in enumerate(files)]
    grays = cs.read_grays(opened)
    for gray, data in zip(grays, files):
        assert np.array_equal(gray, cs.decode_image("x.png", data))
    def buffer(gray):
        return gray.base if gray.base is not None else gray

    assert buffer(grays[0]) is buffer(grays[5]) and buffer(grays[6]) is buffer(grays[7])  # decoded together
    assert buffer(grays[0]) is not buffer(grays[6]) and buffer(grays[8]) is not buffer(grays[0])


def test_small_pngs_decoded_in_turn_keep_their_own_pixels(cs):
    """Small plain PNGs share one canvas per thread: each answer is its own, and stays so."""
    files = [encode(Image.fromarray(noise_digit(seed=i))) for i in range(3)]
    files += [encode(Image.fromarray(noise_digit((13, 9), 3))), encode(Image.fromarray(digit_bar()))]
    chunks = split_chunks(files[0])
    broken = join_chunks([chunks[0], (b"IDAT", chunks[1][1][:len(chunks[1][1]) // 2]), chunks[-1]])
    expected = [np.asarray(Image.open(io.BytesIO(data))) for data in files]
    grays = []
    for i in (0, 1, 3, 0, 2, 4, 1):
        assert np.array_equal(np.asarray(cs.GrayPng.parse(files[i]).decode()), expected[i])  # no fallback to Pillow
        grays.append((i, cs.decode_image(f"{i}.png", files[i])))
        with pytest.raises(TypeError, match="not a readable"):
            cs.decode_image("broken.png", broken)  # fails part-way through the canvas of the size just used
    for i, gray in grays:
        assert np.array_equal(gray, expected[i]), i


@pytest.mark.parametrize("codec_calls", [True, False], ids=["codecs-called", "public-calls"])
def test_small_pngs_read_by_pillows_codecs_as_by_its_public_calls(cs, monkeypatch, codec_calls):
    """codec_pixels (Pillow's codecs called directly) and the public frombytes/tobytes agree, broken streams too."""
    assert cs.CODEC_CALLS  # this Pillow takes the direct calls: the first case is the one serving
    monkeypatch.setattr(cs, "CODEC_CALLS", codec_calls)
    filters = (4, 3, 2, 1, 0)
    files = [filtered_png(noise_digit(seed=i), filters[i:] + filters[:i]) for i in range(5)]
    files += [encode(Image.fromarray(noise_digit(size, 9))) for size in ((1, 1), (13, 9), (64, 64), (1, 64))]
    for data in files:
        png = cs.GrayPng.parse(data)
        gray = png.small_pixels()
        assert np.array_equal(gray, np.asarray(Image.open(io.BytesIO(data)))) and not gray.flags.writeable
        assert gray.tobytes() == png.decode().tobytes()
    chunks = split_chunks(files[0])
    for stream, words in ((chunks[1][1][:len(chunks[1][1]) // 2], "not enough image data"),
                          (zlib.compress(b"\x07" + zlib.decompress(chunks[1][1])[1:]), "cannot decode image data")):
        png = cs.GrayPng.parse(join_chunks([chunks[0], (b"IDAT", stream), chunks[-1]]))
        with pytest.raises(ValueError, match=words):
            png.small_pixels()


def test_threads_decode_small_pngs_each_on_their_own(cs):
    files = [encode(Image.fromarray(noise_digit(seed=i))) for i in range(4)]
    expected = [np.asarray(Image.open(io.BytesIO(data))) for data in files]

    def decode_all(i):
        return all(np.array_equal(cs.decode_image("x.png", files[i]), expected[i]) for _ in range(300))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns within a decode, if they can
    try:
        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(decode_all, range(4)))
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("cut", [lambda stream: stream[:len(stream) // 2],
                                 lambda stream: zlib.compress(b"\x07" + zlib.decompress(stream)[1:])],
                         ids=["truncated-stream", "bad-filter-byte"])
def test_a_broken_png_among_others_fails_as_alone(cs, cut):
    chunks = split_chunks(encode(Image.fromarray(noise_digit())))
    broken = join_chunks([chunks[0], (b"IDAT", cut(chunks[1][1])), chunks[-1]])
    files = [encode(Image.fromarray(digit_bar())), broken, encode(Image.fromarray(digit_bar()))]
    alone = outcome(lambda: cs.decode_image("images[1]", broken))
    assert "images[1]: not a readable" in alone
    assert outcome(lambda: cs.MnistService._preprocess(None, {"images": files})) == alone


def interlaced(png):
    """The PNG's header claiming Adam7 interlacing (its stream no longer matches: Pillow's to judge)."""
    chunks = split_chunks(png)
    return join_chunks([(b"IHDR", chunks[0][1][:12] + b"\x01")] + chunks[1:])


def bad_checksum(png, kind):
    """The PNG with a wrong CRC on its first chunk of this kind."""
    position = 8
    while True:
        length, found = struct.unpack_from(">I4s", png, position)
        if found == kind:
            end = position + 8 + length
            return png[:end] + bytes([png[end] ^ 1]) + png[end + 1:]
        position += 12 + length


def between_idats(png, kind, body):
    """The PNG's pixel stream in several IDAT chunks, with another chunk after the first."""
    chunks = split_chunks(split_stream(png))
    return join_chunks(chunks[:2] + [(kind, body)] + chunks[2:])


OTHER_PNGS = {
    "rgb": lambda: encode(Image.fromarray(np.dstack([digit_bar()] * 3))),
    "16-bit": lambda: encode(Image.fromarray(digit_bar().astype(np.uint16) * 257)),
    "palette": lambda: encode(Image.fromarray(digit_bar()).convert("P")),
    "transparency": lambda: encode(Image.fromarray(255 - digit_bar()), transparency=255),
    "text": lambda: with_chunk(encode(Image.fromarray(digit_bar())), b"tEXt", b"Comment\0scanned"),
    "exif-after-pixels": lambda: with_chunk(encode(Image.fromarray(digit_bar())), b"eXIf",
                                             exif_with_orientation(3)[6:], True),
    "short-dpi": lambda: with_chunk(encode(Image.fromarray(digit_bar())), b"pHYs", b"\0\0\0\1"),
    "interlaced": lambda: interlaced(encode(Image.fromarray(digit_bar()))),
    "stream-split-by-a-chunk": lambda: between_idats(encode(Image.fromarray(noise_digit())), b"gAMA", b"\0\0\xb1\x8f"),
    "bad-header-checksum": lambda: bad_checksum(encode(Image.fromarray(digit_bar())), b"IHDR"),
    "bad-dpi-checksum": lambda: bad_checksum(encode(Image.fromarray(digit_bar()), dpi=(72, 72)), b"pHYs"),
    "no-end": lambda: encode(Image.fromarray(digit_bar()))[:-12],
}


def outcome(decode):
    """The array decode() returns, or the message of the TypeError it raises."""
    try:
        return decode().tolist()
    except TypeError as exc:
        return str(exc)


@pytest.mark.parametrize("case", list(OTHER_PNGS))
def test_other_pngs_are_read_by_pillow(cs, case):
    data = OTHER_PNGS[case]()
    assert cs.GrayPng.parse(data) is None
    assert outcome(lambda: cs.decode_image(case, data)) == outcome(lambda: pillow_gray(cs, case, data))


@pytest.mark.parametrize("cut", [lambda stream: stream[:len(stream) // 2], lambda stream: b"\x78\x9c" + b"\xff" * 40,
                                 lambda stream: zlib.compress(b"\x07" + bytes(28) + zlib.decompress(stream)[29:])],
                         ids=["truncated-stream", "corrupt-stream", "bad-filter-byte"])
def test_a_plain_png_with_broken_pixels_fails_as_in_pillow(cs, cut):
    chunks = split_chunks(encode(Image.fromarray(noise_digit())))
    data = join_chunks([chunks[0], (b"IDAT", cut(chunks[1][1])), chunks[-1]])
    assert isinstance(cs.open_image("x.png", data), cs.GrayPng)
    expected = outcome(lambda: pillow_gray(cs, "x.png", data))
    assert outcome(lambda: cs.decode_image("x.png", data)) == expected and "x.png: not a readable" in expected


@pytest.mark.parametrize("data, text", [
    (b"", "empty.png: not a readable"),
    (b"GIF89a\x00", "empty.png: not a readable"),
    (encode(Image.fromarray(digit_bar()))[:60], "empty.png: not a readable"),
    (encode(Image.fromarray(digit_bar()), "JPEG")[:200], "empty.png: not a readable"),
    (png_header_only(100000, 100000), "empty.png: image dimensions too large"),
    (png_header_only(9000, 9000), "a 9000x9000 L image decodes to 77 MiB, at most 64 MiB"),
    (png_header_only(4096, 4096, depth=16, colour=6), "a 4096x4096 RGBA image decodes to 128 MiB"),
    (encode(Image.new("1", (9000, 9000))), "a 9000x9000 1 image decodes to 77 MiB"),
], ids=["empty", "gif-stub", "truncated-png", "truncated-jpeg", "huge-header", "over-cap-header",
        "16-bit-rgba-header", "bomb"])
def test_unusable_files_raise_type_error_quickly(cs, data, text):
    start = time.perf_counter()
    with pytest.raises(TypeError, match=text):
        cs.decode_image("empty.png", data)
    assert time.perf_counter() - start < 1.0


def test_the_images_of_a_request_share_one_decoding_budget(cs):
    half = png_header_only(4096, 2048, colour=2)  # 32 MiB as Pillow keeps RGB
    with pytest.raises(TypeError, match="images: the request's 3 images decode to 96 MiB together, at most 64 MiB"):
        preprocess(cs, {"images": [half, half, half]})
    with pytest.raises(TypeError, match=r"images\[0\]: not a readable"):  # within budget: decoding starts
        preprocess(cs, {"images": [half, half]})


@pytest.mark.parametrize("mode, size", [("L", (5000, 3000)), ("RGB", (3000, 2000)), ("RGBA", (2400, 1800)),
                                        ("P", (2000, 1500)), ("1", (3000, 2000)), ("I;16", (2000, 1500))])
def test_large_images_are_reduced_and_still_give_the_digit(cs, mode, size):
    canvas = np.full(size[::-1], 255, np.uint8)
    width, height = size
    canvas[height // 4:3 * height // 4, width // 2 - width // 30:width // 2 + width // 30] = 0  # a dark bar
    image = Image.fromarray(canvas)
    image = image.convert(mode) if mode != "I;16" else Image.fromarray(canvas.astype(np.uint16) * 257)
    pixels = cs.to_mnist(cs.decode_image("big.png", encode(image)))
    assert pixels.shape == (28, 28)
    assert np.corrcoef(pixels.ravel(), digit_bar().ravel())[0, 1] > 0.8, mode


def test_a_large_palette_image_with_transparency_is_composited_before_reduction(cs):
    canvas = np.zeros((1500, 2000), np.uint8)
    canvas[300:1200, 940:1060] = 1
    image = Image.fromarray(canvas, "P")
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    image.info["transparency"] = 0  # the white background is see-through
    pixels = cs.to_mnist(cs.decode_image("p.png", encode(image, transparency=0)))
    assert np.corrcoef(pixels.ravel(), digit_bar().ravel())[0, 1] > 0.8


# --- what a user means ------------------------------------------------------------------------------

def exif_with_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation, turn", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                               (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_turns_the_digit_upright(cs, fmt, orientation, turn):
    upright = np.full((60, 40), 255, np.uint8)
    upright[10:50, 5:12] = 0  # a dark bar down the left side
    stored = Image.fromarray(upright).transpose(turn)  # as the sensor saw it
    data = encode(stored, fmt, exif=exif_with_orientation(orientation), **({"quality": 95} if fmt == "JPEG" else {}))
    gray = cs.decode_image("phone." + fmt.lower(), data)
    assert gray.shape == upright.shape
    assert np.abs(gray.astype(int) - upright).mean() < 6


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow says so; the service goes on
def test_a_broken_exif_block_does_not_make_the_image_unreadable(cs):
    data = encode(Image.fromarray(255 - digit_bar()), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    assert cs.decode_image("x.jpg", data).shape == (28, 28)


@pytest.mark.parametrize("peak, scale", [(255, 1), (4095, 16), (65535, 257)], ids=["8-bit", "12-bit", "16-bit"])
def test_16_bit_pngs_are_scaled_by_the_depth_their_values_use(cs, peak, scale):
    values = (digit_bar().astype(np.uint32) * peak // 255).astype(np.uint16)
    gray = cs.decode_image("wide.png", encode(Image.fromarray(values)))
    assert np.abs(gray.astype(int) - digit_bar()).max() <= 1, (peak, scale)
    assert np.array_equal(cs.to_mnist(gray) > 127, digit_bar() > 127)


@pytest.mark.parametrize("background, ink", [(128, 255), (100, 230), (140, 20), (200, 60)],
                         ids=["white-on-mid-grey", "light-on-grey", "black-on-grey", "dark-on-light"])
def test_the_digit_is_found_whatever_the_background_level(cs, background, ink):
    canvas = np.full((120, 100), background, np.uint8)
    canvas[20:100, 42:58] = ink  # 80x16: the bar of digit_bar() at 4x
    pixels = cs.to_mnist(canvas)
    core = digit_bar() == 255
    assert pixels[core].mean() > 200 and pixels[digit_bar() == 0].max() <= 40


def test_uneven_light_is_levelled_before_the_ink_is_found(cs):
    light = np.tile(np.linspace(110, 240, 400, dtype=np.float32), (300, 1))  # a lamp on the right
    canvas = light.copy()
    canvas[60:240, 182:218] *= 0.35  # dark ink (the bar of digit_bar() at 9x), lit like the paper around it
    pixels = cs.to_mnist(np.clip(canvas, 0, 255).astype(np.uint8))
    assert np.corrcoef(pixels.ravel(), digit_bar().ravel())[0, 1] > 0.85


def test_no_ink_through_the_service_is_a_400_naming_the_file(tiny_service):
    blank = encode(Image.new("RGB", (640, 480), (230, 228, 220)), "JPEG")
    with pytest.raises(StepFailed) as caught:
        tiny_service.inference({"images": {"empty.jpg": io.BytesIO(blank)}})
    failed = inference_failed(caught.value)
    assert failed.http_status == 400 and "empty.jpg: no digit found" in failed.message


# --- modes -------------------------------------------------------------------------------------

def with_alpha(mode, ink_value, transparent_colour):
    """The bar as ink of one gray value on a fully transparent background of another colour."""
    alpha = digit_bar()
    gray = np.where(alpha > 0, ink_value, transparent_colour).astype(np.uint8)
    la = Image.fromarray(np.dstack([gray, alpha]), "LA")
    return la.convert(mode)


def palette_with_transparency():
    image = Image.fromarray(255 - digit_bar()).convert("P")
    image.info["transparency"] = image.getpixel((0, 0))
    return Image.open(io.BytesIO(encode(image)))


MODE_CASES = {
    "L": lambda: Image.fromarray(digit_bar()),
    "1": lambda: Image.fromarray(digit_bar() > 127),
    "P": lambda: Image.fromarray(digit_bar()).convert("P"),
    "RGB": lambda: Image.fromarray(np.dstack([digit_bar()] * 3)),
    "RGB-coloured-ink": lambda: Image.fromarray(np.dstack([digit_bar(), digit_bar() // 2, digit_bar()])),
    "I;16": lambda: Image.fromarray(digit_bar().astype(np.uint16) * 257),
    "I": lambda: Image.fromarray(digit_bar().astype(np.int32) * 257),
    "RGBA-black-ink-on-clear-black": lambda: with_alpha("RGBA", 0, 0),
    "RGBA-white-ink-on-clear-white": lambda: with_alpha("RGBA", 255, 255),
    "LA-black-ink-on-clear-white": lambda: with_alpha("LA", 0, 255),
    "P-with-transparency": palette_with_transparency,
}


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_every_mode_becomes_the_white_on_black_digit(cs, case):
    image = MODE_CASES[case]()
    # PNG cannot hold 32-bit "I" images; feed that one to the converter directly.
    gray = cs.to_gray(image) if image.mode == "I" else cs.decode_image(case, encode(image))
    pixels = cs.to_mnist(gray)
    assert pixels.dtype == np.uint8 and pixels.shape == (28, 28)
    core = digit_bar() == 255
    assert pixels[core].min() >= 200, case
    assert pixels[digit_bar() == 0].max() <= 40, case


def test_flatten_alpha_blends_partial_transparency(cs):
    gray_alpha = np.array([[[0, 255], [0, 128], [0, 0], [200, 0]]], np.uint8)
    assert cs.flatten_alpha(gray_alpha).tolist() == [[0, 127, 255, 255]]


# --- MNIST geometry ----------------------------------------------------------------------------

def test_black_on_white_is_inverted(cs):
    pixels = cs.to_mnist(255 - digit_bar())
    assert np.array_equal(pixels, digit_bar())


def test_mnist_digit_passes_through_unchanged(cs, embedded_arrays):
    digit = embedded_arrays[2][0]
    data = encode(Image.fromarray(digit))
    assert np.array_equal(cs.to_mnist(cs.decode_image("d.png", data)), digit)


def test_a_batch_makes_each_image_the_digit_to_mnist_makes(cs, embedded_arrays):
    faint = embedded_arrays[2][1] // 2  # 28x28 but not MNIST-like: its ink is stretched to full range
    specked = embedded_arrays[2][2].copy()
    specked[0, 0] = 9  # a lit border pixel: the background is levelled
    grays = [embedded_arrays[2][0], faint, 255 - digit_bar(), specked, np.pad(digit_bar(), 30), digit_bar()]
    batch = cs.to_batch(grays, [f"{i}.png" for i in range(len(grays))])
    assert batch.dtype == np.float32 and batch.shape == (len(grays), 784)
    for row, gray in zip(batch, grays):
        assert np.array_equal(row, cs.to_mnist(gray).ravel())
    assert not np.array_equal(batch[1], faint.ravel()) and not np.array_equal(batch[3], specked.ravel())


def border_and_peak(gray):
    """mnist_like's definition, in numpy: a black border all round and a pixel at full white."""
    border = np.concatenate((gray[0], gray[-1], gray[:, 0], gray[:, -1]))
    return not border.any() and gray.max() == 255


def lit(shape, *pixels, level=255, seed=0):
    """A black image with a random inside (levels below 255) and the given pixels set to level."""
    gray = np.zeros(shape, np.uint8)
    if shape[0] > 2 and shape[1] > 2:
        gray[1:-1, 1:-1] = np.random.default_rng(seed).integers(0, 255, (shape[0] - 2, shape[1] - 2))
    for row, col in pixels:
        gray[row, col] = level
    return gray


MNIST_LIKE_CASES = {
    "digit": lambda: digit_bar(),
    "no-full-white": lambda: lit((28, 28), (14, 14), level=254),
    "white-inside": lambda: lit((28, 28), (1, 1)),
    "one-pixel": lambda: lit((1, 1), (0, 0)),
    "black": lambda: lit((28, 28)),
    "one-row": lambda: lit((1, 9), (0, 4)),
    "one-column": lambda: lit((9, 1), (4, 0)),
    "two-by-two": lambda: lit((2, 2)),
    "wide": lambda: lit((30, 41), (15, 20), seed=1),
    **{f"lit-{edge}": (lambda pixel=pixel: lit((28, 28), (14, 14), pixel, level=1))
       for edge, pixel in {"top": (0, 9), "bottom": (27, 3), "left": (20, 0), "right": (5, 27),
                           "corner": (27, 27), "first": (0, 0)}.items()},
    **{f"white-{edge}": (lambda pixel=pixel: lit((30, 41), pixel))
       for edge, pixel in {"top": (0, 9), "bottom": (29, 3), "left": (20, 0), "right": (5, 40)}.items()},
}


@pytest.mark.parametrize("case", list(MNIST_LIKE_CASES))
def test_mnist_like_reads_the_border_and_peak_of_any_image(cs, case):
    gray = MNIST_LIKE_CASES[case]()
    assert cs.mnist_like(gray) == border_and_peak(gray)
    assert cs.mnist_like(np.asfortranarray(gray)) == border_and_peak(gray)  # any memory layout


def test_mnist_like_cases_cover_both_answers():
    answers = [border_and_peak(make()) for make in MNIST_LIKE_CASES.values()]
    assert answers.count(True) >= 3 and answers.count(False) >= 10


def test_a_batch_names_the_image_without_ink(cs):
    with pytest.raises(TypeError, match="b.png: no digit found"):
        cs.to_batch([digit_bar(), np.zeros((28, 28), np.uint8)], ["a.png", "b.png"])


def test_grey_paper_is_levelled(cs):
    paper = np.full((28, 28), 180, np.uint8)
    paper[digit_bar() == 255] = 40
    pixels = cs.to_mnist(paper)
    assert pixels[digit_bar() == 255].min() == 255 and pixels[digit_bar() == 0].max() == 0


def ink_box(pixels, level=64):
    rows, cols = np.nonzero(pixels > level)
    return rows.min(), rows.max(), cols.min(), cols.max()


def centre_of_mass(pixels):
    mass = pixels.astype(float)
    rows, cols = np.indices(pixels.shape)
    return (mass * rows).sum() / mass.sum(), (mass * cols).sum() / mass.sum()


def test_large_image_is_cropped_fitted_in_20_box_and_centred_by_mass(cs):
    canvas = np.full((300, 400), 255, np.uint8)
    canvas[20:120, 330:380] = 0      # a dark 100x50 block near the top-right corner
    pixels = cs.to_mnist(canvas)
    top, bottom, left, right = ink_box(pixels)
    assert bottom - top + 1 == 20 and right - left + 1 == 10
    row, col = centre_of_mass(pixels)
    assert abs(row - 13.5) <= 0.6 and abs(col - 13.5) <= 0.6


def test_small_digit_in_larger_image_is_scaled_up(cs):
    canvas = np.zeros((64, 48), np.uint8)
    canvas[5:15, 5:10] = 255
    top, bottom, left, right = ink_box(cs.to_mnist(canvas))
    assert bottom - top + 1 == 20 and 9 <= right - left + 1 <= 11


@pytest.mark.parametrize("make", [
    lambda: np.full((50, 50), 255, np.uint8),
    lambda: np.zeros((28, 28), np.uint8),
    lambda: np.full((300, 200), 128, np.uint8),
    lambda: np.clip(np.random.default_rng(0).normal(180, 8, (480, 640)), 0, 255).astype(np.uint8),
    lambda: np.tile(np.linspace(90, 230, 640), (480, 1)).astype(np.uint8),
], ids=["white", "black-28", "grey", "noisy-paper", "lit-from-one-side"])
def test_an_image_without_ink_is_a_clear_error(cs, make):
    with pytest.raises(TypeError, match="blank.png: no digit found"):
        cs.to_mnist(make(), "blank.png")


def test_mnist_digit_pasted_in_a_photo_like_jpeg_comes_back_similar(cs, embedded_arrays):
    digit = embedded_arrays[2][1]
    big = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BICUBIC)
    photo = Image.new("RGB", (640, 480), (205, 200, 190))
    photo.paste(Image.merge("RGB", [big.point(lambda v: v * 0.8 + 20)] * 3), (300, 100))
    pixels = cs.to_mnist(cs.decode_image("photo.jpg", encode(photo, "JPEG", quality=90)))
    similarity = np.corrcoef(pixels.ravel(), digit.ravel())[0, 1]
    assert similarity > 0.8


# --- answers -----------------------------------------------------------------------------------

def test_postprocess_one_image_gives_label_and_top5(cs):
    scores = [0.01, 0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 0.9, 0.0, 0.07]
    answer = cs.MnistService._postprocess(None, {"scores": [scores]})
    assert answer == {"predicted_label": "7",
                      "scores": [["7", "0.900"], ["9", "0.070"], ["3", "0.020"], ["0", "0.010"], ["1", "0.000"]]}


def test_postprocess_several_images_gives_a_list(cs):
    rows = [[float(i == k) for i in range(10)] for k in (3, 8)]
    answers = cs.MnistService._postprocess(None, {"scores": rows})
    assert [a["predicted_label"] for a in answers] == ["3", "8"]


@pytest.mark.parametrize("classes", [3, 10, 12])
def test_postprocess_names_each_class_by_its_index_whatever_their_count(cs, classes):
    rng = np.random.RandomState(classes)
    scores = [float(v) for v in rng.random_sample(classes)]
    scores[classes - 1] = scores[0]  # a tie keeps index order
    answer = cs.MnistService._postprocess(None, {"scores": [scores]})
    ranked = sorted(range(classes), key=lambda i: (-scores[i], i))[:5]
    assert answer == {"predicted_label": str(ranked[0]),
                      "scores": [[str(i), "{:.3f}".format(scores[i])] for i in ranked]}


def test_imports_only_what_modelarts_provides(cs):
    source = artifact_path(INFERENCE_CODE).read_text()
    assert "modelarts_mnist" not in source


# --- with the tiny trained model ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_service(cs, tiny_version):
    return cs.MnistService("mnist", str(tiny_version / "model"))


def test_real_held_out_digits_are_recognised(tiny_service, embedded_arrays):
    test_x, test_y = embedded_arrays[2][-100:], embedded_arrays[3][-100:]
    files = {f"{i}.png": io.BytesIO(encode(Image.fromarray(x))) for i, x in enumerate(test_x)}
    answers = tiny_service.inference({"images": files})
    predicted = np.array([int(a["predicted_label"]) for a in answers])
    assert (predicted == test_y).mean() >= 0.8


def test_black_on_white_photo_digits_are_recognised(tiny_service, embedded_arrays):
    test_x, test_y = embedded_arrays[2][-40:], embedded_arrays[3][-40:]
    files = {}
    for i, digit in enumerate(test_x):
        big = Image.fromarray(255 - digit).resize((112, 112), Image.Resampling.BICUBIC)
        page = Image.new("L", (200, 160), 235)
        page.paste(big, (60 + i % 20, 20 + i % 15))
        files[f"{i}.jpg"] = io.BytesIO(encode(page, "JPEG", quality=90))
    predicted = np.array([int(a["predicted_label"]) for a in tiny_service.inference({"images": files})])
    assert (predicted == test_y).mean() >= 0.7


def load_photo_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "photo_bench.py"
    spec = importlib.util.spec_from_file_location("photo_bench_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phone_photos_of_digits_score_nearly_as_well_as_the_clean_digits(tiny_service, embedded_arrays):
    bench = load_photo_bench()
    digits, labels = embedded_arrays[2][-30:], embedded_arrays[3][-30:]
    rng = np.random.default_rng(1)
    photos = [bench.render_photo(digit, rng) for digit in digits]
    clean, _ = bench.accuracy(tiny_service, [bench.encode_png(d) for d in digits], labels)
    photo, _ = bench.accuracy(tiny_service, photos, labels)
    assert photo >= clean - 0.1, (clean, photo)  # one in ten at most, on a weak model and 30 digits


def test_service_maps_bad_input_to_400(tiny_service):
    with pytest.raises(StepFailed) as caught:  # the runtime's error; the server edge gives the status
        tiny_service.inference({"images": {"x.png": io.BytesIO(b"not an image")}})
    failed = inference_failed(caught.value)
    assert failed.http_status == 400 and "x.png: not a readable" in failed.message


def test_unreadable_image_message_names_no_memory_address(cs):
    with pytest.raises(TypeError) as caught:
        cs.decode_image("x.png", io.BytesIO(b"definitely not an image"))
    assert "0x" not in str(caught.value) and "x.png: not a readable" in str(caught.value)


@pytest.mark.parametrize("size", [1, 2, 27, 108, 109], ids=lambda n: f"n{n}")
def test_median_level_matches_numpy_median(cs, size):
    values = np.random.default_rng(size).integers(0, 256, size).astype(np.uint8)
    assert cs.median_level(values) == int(np.median(values))
