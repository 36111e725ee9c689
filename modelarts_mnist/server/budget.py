"""What one request may cost, checked before the work is done: JSON size and depth, form parts, images and pixels.

The 12 MB body limit bounds bytes, not work: 4 million empty JSON strings, or 96 small PNGs each
declaring 4096x4096 16-bit pixels, fit in it. So the service counts JSON values from the raw body
before parsing it, multipart parts before splitting, and reads every image's header (Pillow opens
lazily: size and mode, no pixels) before user code decodes anything. Values that are not images
(a CSV file, a text field) pass through untouched.
"""
from __future__ import annotations

import base64
import binascii
import io
import itertools
import struct
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..errors import InvalidInput

MIB = 1024 * 1024

# Base64 strings are taken for images when their first bytes carry one of these signatures (a prefix
# test costs nothing; opening every long string with Pillow would). Files in a form are always opened.
IMAGE_SIGNATURES = (
    b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"\x00\x00\x01\x00",
    b"\x00\x00\x02\x00", b"8BPS", b"\x00\x00\x00\x0cjP  ", b"\xffO\xffQ", b"P1", b"P2", b"P3", b"P4",
    b"P5", b"P6", b"P7", b"Pf", b"PF", b"qoif", b"DDS ", b"icns", b"\x01\xda", b"\x00\x00\x00\x0cJXL ",
    b"\xff\x0a", b"\x00\x00\x00 ftyp", b"\x00\x00\x00\x1cftyp", b"\x00\x00\x00\x18ftyp",
)
PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"
PNG_HEADER = struct.Struct(">16sIIBB")  # up to IHDR's width, height, bit depth and colour type
FRAMES_IN_HEADER = ("PNG", "WEBP")  # formats whose frame count Pillow reads without walking the file
ANIMATION_SCAN = 4096  # an APNG's acTL chunk comes before its pixels; PNGs with one take Pillow's path
PNG_COLOURS = {0: ("gray", 1), 2: ("RGB", 3), 3: ("palette", 1), 4: ("gray+alpha", 2), 6: ("RGBA", 4)}
SIGNATURE_CHARS = 16  # base64 characters decoded to test a string's signature (12 bytes)


def text_prefixes() -> tuple[str, ...]:
    """How base64 text of each signature starts (both alphabets), and `data:` in any case.

    A string is decoded only when it starts with one of these: a str.startswith over a tuple, so
    a body of 262,144 short strings is walked in a few hundredths of a second.
    """
    prefixes = {"".join(spelling) for spelling in itertools.product(*zip("data:", "DATA:"))}
    for signature in IMAGE_SIGNATURES:
        fixed = len(signature) * 8 // 6  # characters that depend on the signature's bytes only
        text = base64.b64encode(signature).decode()[:fixed]
        prefixes.update((text, text.replace("+", "-").replace("/", "_")))
    return tuple(sorted(prefixes))


TEXT_PREFIXES = text_prefixes()

# The service's own refusals stand in for Pillow's bomb warning, which would log one line per odd size.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class Limits:
    """The most one request may ask for; the one place these numbers live."""

    max_json_values: int = 262_144  # 256 MNIST images as arrays of 784 numbers still fit
    max_json_depth: int = 64
    max_parts: int = 1_000  # form parts (werkzeug's own default)
    max_images: int = 256  # image files and base64 images per request
    max_image_bytes: int = 64 * MIB  # decoded pixels of one image (4096x4096 RGBA at 8 bits)
    max_request_image_bytes: int = 128 * MIB  # decoded pixels of all images of a request


DEFAULT_LIMITS = Limits()


def bound_json_values(body: bytes, limits: Limits = DEFAULT_LIMITS) -> NumberCounter | None:
    """None when a JSON body surely holds at most max_json_values values, else a counter for its numbers.

    Counted on the raw bytes, before parsing. Every value but a container's first follows a comma,
    so commas + containers + 1 bound the values (commas inside strings only inflate the bound). When
    that bound is over the limit, strings, containers and literals are bounded by their own marks
    (InvalidInput if they alone are over), and json.loads counts the numbers through the counter.
    """
    containers = body.count(b"[") + body.count(b"{")
    if body.count(b",") + containers + 1 <= limits.max_json_values:
        return None
    others = body.count(b'"') // 2 + containers + body.count(b"null") + body.count(b"true") + body.count(b"false")
    if others > limits.max_json_values:
        raise InvalidInput(f"JSON body has more than {limits.max_json_values} values")
    return NumberCounter(limits.max_json_values - others, limits.max_json_values)


class NumberCounter:
    """json.loads' parse_int/parse_float/parse_constant hooks: the parse stops once the numbers pass `left`."""

    def __init__(self, left: int, limit: int):
        self.left, self.limit = left, limit

    def hooks(self) -> dict[str, Any]:
        """The keyword arguments to hand json.loads."""
        return {"parse_int": self.parse_int, "parse_float": self.parse_float, "parse_constant": self.parse_constant}

    def count(self) -> None:
        """Count one number; InvalidInput past the limit."""
        self.left -= 1
        if self.left < 0:
            raise InvalidInput(f"JSON body has more than {self.limit} values")

    def parse_int(self, text: str) -> int:
        self.count()
        return int(text)

    def parse_float(self, text: str) -> float:
        self.count()
        return float(text)

    def parse_constant(self, text: str) -> float:
        self.count()
        return float(text)  # NaN, Infinity, -Infinity, as json.loads reads them


def check_data(data: Any, limits: Limits = DEFAULT_LIMITS) -> None:
    """InvalidInput when parsed data nests too deep, holds too many images, or too many decoded pixels.

    Walks dicts and lists iteratively; a file (BytesIO) or a base64 string with an image signature
    counts as an image, and its header decides its cost. Files rewind to their start afterwards.
    """
    images, total = 0, 0
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth >= limits.max_json_depth:
            raise InvalidInput(f"request data is nested deeper than {limits.max_json_depth} levels")
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, str):
                if not child.startswith(TEXT_PREFIXES):  # the common case, kept to one C call
                    continue
                source = image_source(child)
            elif isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
                continue
            else:
                source = image_source(child)
            if source is None:
                continue
            images += 1
            if images > limits.max_images:
                raise InvalidInput(f"request holds more than {limits.max_images} images")
            cost, described = image_cost(source)
            if cost > limits.max_image_bytes:
                raise InvalidInput(f"{described} would decode to {cost / MIB:.0f} MiB, "
                                   f"over the {limits.max_image_bytes // MIB} MiB limit per image")
            total += cost
            if total > limits.max_request_image_bytes:
                raise InvalidInput(f"the request's images would decode to more than "
                                   f"{limits.max_request_image_bytes // MIB} MiB together")


def image_source(value: Any) -> io.BytesIO | None:
    """A readable stream over an uploaded file or a base64 image string, or None for anything else."""
    if isinstance(value, io.BytesIO):
        return value
    if isinstance(value, str):
        decoded = decode_base64_image(value)
        return io.BytesIO(decoded) if decoded is not None else None
    return None


def decode_base64_image(text: str) -> bytes | None:
    """The bytes of a base64 string (any alphabet, padding optional, data: URL) that starts like an image."""
    if len(text) < 8:
        return None
    if text[:5].lower() == "data:":
        text = text[text.find(",", 0, 512) + 1:] if "," in text[:512] else ""
    head = lenient_b64decode(text[:SIGNATURE_CHARS])
    if head is None or not head.startswith(IMAGE_SIGNATURES):
        return None
    return lenient_b64decode(text)


def lenient_b64decode(text: str) -> bytes | None:
    """Standard or URL-safe base64, with or without padding and line breaks; None when it is not base64."""
    text = "".join(text.split()).rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def image_cost(source: io.BytesIO) -> tuple[int, str]:
    """(bytes of decoded pixels, a description) of an image read from its headers only; (0, "") if not an image.

    Every frame of an animated PNG or WebP counts (their headers say how many); a GIF or TIFF is
    charged its first frame, the one Image.load() decodes: counting theirs means walking the file
    frame by frame, which a 12 MB GIF of 600,000 tiny frames turns into seconds.
    """
    start = source.tell()
    head = source.read(ANIMATION_SCAN)
    source.seek(start)
    if head[:16] == PNG_START and len(head) >= PNG_HEADER.size and b"acTL" not in head:
        return png_cost(head[:PNG_HEADER.size])  # the common case, in 1 us instead of 50
    try:
        with Image.open(source) as image:
            width, height = image.size
            per_pixel = max(stored_bytes(image.mode), source_bytes(image))
            frames = count_frames(image)
            described = f"a {width}x{height} {image.format} image ({image.mode}" + (
                f", {frames} frames)" if frames > 1 else ")")
    except Image.DecompressionBombError as exc:  # past Pillow's own cap (so past ours): its text names the size
        raise InvalidInput(f"an image is too large to decode: {exc}") from exc
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for what is not an image: not ours to judge
        return 0, ""
    finally:
        source.seek(start)
    return width * height * per_pixel * frames, described


def count_frames(image: Image.Image) -> int:
    """How many frames an animated PNG or WebP declares (read from its header); 1 for other formats."""
    if image.format not in FRAMES_IN_HEADER:
        return 1
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - a broken animation header: the first frame still counts
        return 1


def png_cost(head: bytes) -> tuple[int, str]:
    """image_cost of a PNG from its IHDR chunk (signature, length, type, then the fields)."""
    width, height, depth, colour = PNG_HEADER.unpack(head)[-4:]
    kind, bands = PNG_COLOURS.get(colour, ("unknown", 4))
    wide = depth == 16
    stored = (2 if wide else 1) if bands == 1 else 4  # as Pillow keeps them: L/P/I;16, or 4 bytes
    per_pixel = max(stored, bands * (2 if wide else 1))
    return width * height * per_pixel, f"a {width}x{height} {depth}-bit {kind} PNG image"


def stored_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's own storage for a mode (multi-band images take 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def source_bytes(image: Image.Image) -> int:
    """Bytes per pixel the decoder unpacks: more than stored for 16-bit-per-band files (PNG, TIFF)."""
    wide = any(";16" in str(tile[3]) for tile in (image.tile or ()) if len(tile) > 3)
    return len(image.getbands()) * (2 if wide else 1)
