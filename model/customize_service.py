"""ModelArts inference code for the MNIST tutorial: images in, predicted digit and top-5 scores out.

Upload this file with config.json into the trained model's `model/` folder. It runs on ModelArts
as is (stdlib, numpy, Pillow and the platform's `model_service` only).

Accepted requests:
- multipart/form-data, field `images`, one or several files: {"images": {filename: file}};
- JSON {"images": "<base64>"} or {"images": ["<base64>", ...]} (a data: URL prefix is fine).
Each image (PNG, JPEG, BMP or GIF, any mode and size) becomes an MNIST digit: 8-bit gray, white
on black (a dark digit on a light background is inverted), cropped to the digit, fitted in a
20x20 box and centred by mass in 28x28. A 28x28 image keeps its geometry (it is MNIST-shaped).
"""
import base64
import binascii
import io
import logging

import numpy as np
from PIL import Image, ImageOps

from model_service.tfserving_model_service import TfServingBaseService

logger = logging.getLogger(__name__)

INPUT_NAME = "images"    # the multipart field, and the SavedModel signature's input
OUTPUT_NAME = "scores"   # the signature's output: probabilities of digits 0-9
FORMATS = ("PNG", "JPEG", "BMP", "GIF")
MAX_PIXELS = 4096 * 4096  # far below Pillow's bomb limit: a 16-megapixel photo is plenty for a digit
MAX_IMAGES = 256          # per request; keeps a body of tiny files from eating the worker's memory
SIDE, BOX = 28, 20        # MNIST: 28x28 field, digit fitted in a 20x20 box
INK_LEVEL = 0.25          # fraction of the peak above which a pixel counts as ink when cropping
JPEG_DRAFT_SIDE = 120     # JPEGs decode at 1/2..1/8 scale, keeping at least this short side: much faster
TOP_K = 5
# Image.Resampling arrived in Pillow 9.1; Python 3.6 runtimes get Pillow 8.4, which has only the constant.
BILINEAR = getattr(Image, "Resampling", Image).BILINEAR


class MnistService(TfServingBaseService):
    """Turns uploaded images into [N, 784] float32 pixels and the model's scores into labels."""

    def _preprocess(self, data):
        named = list(iter_images(data))
        if len(named) > MAX_IMAGES:
            raise TypeError(f"{INPUT_NAME}: {len(named)} images in one request, at most {MAX_IMAGES}")
        batch = np.empty((len(named), SIDE * SIDE), np.float32)
        for row, (name, source) in zip(batch, named):
            row[:] = to_mnist(decode_image(name, source)).ravel()
        return {INPUT_NAME: batch}

    def _postprocess(self, data):
        answers = [describe_scores(row) for row in data[OUTPUT_NAME]]
        return answers[0] if len(answers) == 1 else answers


def iter_images(data):
    """(name, bytes-or-file) for each image of a multipart or JSON request."""
    if not isinstance(data, dict) or INPUT_NAME not in data:
        got = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise KeyError(f"request has no '{INPUT_NAME}' field (got {got})")
    field = data[INPUT_NAME]
    if isinstance(field, dict):
        items = list(field.items())
    elif isinstance(field, (list, tuple)):
        items = [(f"{INPUT_NAME}[{i}]", value) for i, value in enumerate(field)]
    else:
        items = [(INPUT_NAME, field)]
    if not items:
        raise TypeError(f"{INPUT_NAME}: no image in the request")
    return ((str(name), from_base64(name, value) if isinstance(value, str) else value)
            for name, value in items)


def from_base64(name, text):
    """The bytes of a base64 string (standard or URL-safe alphabet, optional data: URL prefix)."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise TypeError(f"{name}: not valid base64 ({exc})") from exc


def decode_image(name, source):
    """An 8-bit grayscale array of one image file; TypeError names the file when it is unusable."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    elif not hasattr(source, "read"):
        raise TypeError(f"{name}: expected an image file, got {type(source).__name__}")
    try:
        image = Image.open(source, formats=FORMATS)
        width, height = image.size
        if width * height > MAX_PIXELS or not width or not height:
            raise TypeError(f"{name}: image is {width}x{height} pixels, at most {MAX_PIXELS} allowed")
        shrink_jpeg(image).load()
        return to_gray(orient(image))
    except TypeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TypeError(f"{name}: image dimensions too large ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        # Pillow's own text names the in-memory buffer's address: noise for the user.
        raise TypeError(f"{name}: not a readable PNG, JPEG, BMP or GIF image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise TypeError(f"{name}: not a readable PNG, JPEG, BMP or GIF image ({exc})") from exc


def shrink_jpeg(image):
    """Let the JPEG decoder scale down and convert to gray itself (a large speed-up on photos)."""
    if image.format == "JPEG" and image.mode in ("RGB", "L", "YCbCr"):
        width, height = image.size
        scale = max(1, min(width, height) // JPEG_DRAFT_SIDE)
        image.draft("L", (width // scale, height // scale))
    return image


def orient(image):
    """Apply the EXIF orientation of phone photos, so the digit is upright."""
    if image.format == "JPEG" and image.getexif().get(0x0112, 1) != 1:
        return ImageOps.exif_transpose(image)
    return image


def to_gray(image):
    """Any Pillow mode as 8-bit gray; transparency is composited onto a background that contrasts with the ink."""
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    mode = image.mode
    if mode in ("L", "1", "P", "RGB", "CMYK", "YCbCr"):
        return np.asarray(image if mode == "L" else image.convert("L"))
    if mode.startswith("I;16"):
        return (np.asarray(image, np.uint16) >> 8).astype(np.uint8)
    if mode in ("I", "F"):
        values = np.asarray(image, np.float32)
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
        return np.clip(values * scale, 0, 255).astype(np.uint8)
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return flatten_alpha(np.asarray(image.convert("LA")))
    return np.asarray(image.convert("RGB").convert("L"))


def flatten_alpha(gray_alpha):
    """Composite gray+alpha onto white when the ink is dark, onto black when it is light."""
    gray = gray_alpha[..., 0].astype(np.float32)
    alpha = gray_alpha[..., 1].astype(np.float32) * (1.0 / 255.0)
    weight = alpha.sum()
    ink = float((gray * alpha).sum() / weight) if weight else 0.0
    background = 255.0 if ink < 128 else 0.0
    return (background + (gray - background) * alpha + 0.5).astype(np.uint8)


def to_mnist(gray):
    """A 28x28 uint8 MNIST digit (white on black) from an 8-bit gray image of any size."""
    pixels = normalise_levels(gray)
    if pixels.shape == (SIDE, SIDE):
        return pixels
    return centre_digit(crop_to_ink(pixels))


def normalise_levels(gray):
    """White ink on a zero background at full range; a light border means dark ink, so invert."""
    border = np.concatenate((gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]))
    background = median_level(border)
    if background > 127:
        gray, background = 255 - gray, 255 - background
    peak = int(gray.max())
    if background == 0 and peak == 255:
        return gray
    if peak <= background:
        return np.zeros_like(gray)
    scaled = (gray.astype(np.float32) - background) * (255.0 / (peak - background))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def median_level(values):
    """int(np.median(values)) for uint8 values, without np.median's ~30 us of overhead per call."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return int(ordered[middle])
    return (int(ordered[middle - 1]) + int(ordered[middle])) // 2


def crop_to_ink(pixels):
    """The bounding box of the pixels bright enough to be ink (a view, not a copy)."""
    ink = pixels > INK_LEVEL * 255
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not rows.size:
        return pixels[:0, :0]
    return pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def centre_digit(digit):
    """Fit the digit in the 20x20 box (aspect kept) and place its centre of mass at the field's centre."""
    field = np.zeros((SIDE, SIDE), np.uint8)
    height, width = digit.shape
    if not height:
        return field
    scale = BOX / max(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    small = np.asarray(Image.fromarray(digit).resize(size, BILINEAR, reducing_gap=3.0))
    small = stretch(small)
    top, left = centre_offsets(small)
    field[top:top + small.shape[0], left:left + small.shape[1]] = small
    return field


def stretch(pixels):
    """Restore full range after resizing blurred thin strokes."""
    peak = int(pixels.max())
    if peak in (0, 255):
        return pixels
    return (pixels.astype(np.float32) * (255.0 / peak) + 0.5).astype(np.uint8)


def centre_offsets(small):
    """Top-left position putting the centre of mass at the field's centre, kept inside the field."""
    mass = small.astype(np.float32)
    total = mass.sum()
    height, width = small.shape
    if total:
        row = float(mass.sum(axis=1) @ np.arange(height)) / total
        col = float(mass.sum(axis=0) @ np.arange(width)) / total
    else:
        row, col = (height - 1) / 2, (width - 1) / 2
    centre = (SIDE - 1) / 2
    # int(): on numpy < 1.19, round() of a numpy float is a float, which cannot index.
    top = min(max(int(round(centre - row)), 0), SIDE - height)
    left = min(max(int(round(centre - col)), 0), SIDE - width)
    return top, left


def describe_scores(scores):
    """{"predicted_label": "7", "scores": [["7", "0.982"], ...]} for one image's probabilities."""
    ranked = sorted(range(len(scores)), key=lambda digit: scores[digit], reverse=True)
    return {"predicted_label": str(ranked[0]),
            "scores": [[str(digit), "%.3f" % scores[digit]] for digit in ranked[:TOP_K]]}
