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
import struct
import threading
import zlib

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from model_service.tfserving_model_service import TfServingBaseService

logger = logging.getLogger(__name__)

INPUT_NAME = "images"    # the multipart field, and the SavedModel signature's input
OUTPUT_NAME = "scores"   # the signature's output: probabilities of digits 0-9
FORMATS = ("PNG", "JPEG", "BMP", "GIF")
MIB = 1024 * 1024
# What one request may cost, checked from the headers before any pixel is decoded: this code
# runs on ModelArts without the local service's own checks in front of it.
MAX_IMAGES = 256                  # per request
MAX_IMAGE_BYTES = 64 * MIB        # decoded pixels of one image: 4096x4096 RGBA, a 16-megapixel gray scan
MAX_REQUEST_BYTES = 64 * MIB      # decoded pixels of all the images of a request (JPEGs after their draft)
WORK_SIDE = 256           # larger images are box-reduced to this long side before any array work
STRIP_PIXELS = 1 << 20    # ... a band of about this many pixels at a time: no full-size copy
SIDE, BOX = 28, 20        # MNIST: 28x28 field, digit fitted in a 20x20 box
INK_LEVEL = 0.25          # fraction of the stroke level above which a pixel counts as ink when cropping
NOISE_SIGMAS = 4.0        # ink must stand this many noise deviations off the paper
MIN_CONTRAST = 24         # ... and at least this many gray levels: fainter than that is no digit
SORT_LIMIT = 1024         # medians of up to this many values sort; larger ones partition
SMALL_PIXELS = 64 * 64    # gray PNGs up to this size are unfiltered together: per-call costs are most of their cost
JPEG_DRAFT_SIDE = 120     # JPEGs decode at 1/2..1/8 scale, keeping at least this short side: much faster
TOP_K = 5
DIGIT_NAMES = tuple(str(digit) for digit in range(10))  # made once: str() per label was ~10% of describe_scores
# Image.Resampling and Image.Transpose arrived in Pillow 9.1; Pillow 8.4 (Python 3.6) has the constants.
BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
ORIENTATION = 0x0112      # the EXIF tag phones use for "rotate when shown"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IHDR = struct.Struct(">I4sIIBBBBBI")  # length, type, size, depth, colour type, methods, interlace, CRC
PNG_CHUNK = struct.Struct(">I4s")
PNG_CRC = struct.Struct(">I")
# Ancillary PNG chunks that change neither the pixels Pillow decodes nor what orient() and to_gray()
# read (EXIF, XMP and text chunks, transparency), each with its one valid length. A PNG holding any
# other chunk, or one of these at another length, is read by Pillow's PNG plugin as before.
PLAIN_PNG_CHUNKS = {b"pHYs": 9, b"gAMA": 4, b"sRGB": 1, b"cHRM": 32, b"sBIT": 1, b"tIME": 7}
CANVASES = threading.local()  # per thread: the image small GrayPngs are decoded into (codec_pixels)


class MnistService(TfServingBaseService):
    """Turns uploaded images into [N, 784] float32 pixels and the model's scores into labels."""

    def _preprocess(self, data):
        opened, total = [], 0
        for name, source in list_images(data):
            image = open_image(name, source)
            opened.append((name, image))
            total += decoded_bytes(image)  # every header read before any pixel
        if total > MAX_REQUEST_BYTES:
            raise TypeError(f"{INPUT_NAME}: the request's {len(opened)} images decode to {total // MIB} MiB "
                            f"together, at most {MAX_REQUEST_BYTES // MIB} MiB; send fewer or smaller images")
        return {INPUT_NAME: to_batch(read_grays(opened), [name for name, _ in opened])}

    def _postprocess(self, data):
        answers = [describe_scores(row) for row in data[OUTPUT_NAME]]
        return answers[0] if len(answers) == 1 else answers


def list_images(data):
    """[(name, bytes-or-file)] for each image of a multipart or JSON request, counted before it is listed."""
    if not isinstance(data, dict) or INPUT_NAME not in data:
        got = sorted(map(str, data))[:20] if isinstance(data, dict) else type(data).__name__
        raise KeyError(f"request has no '{INPUT_NAME}' field (got {got})")
    field = data[INPUT_NAME]
    if isinstance(field, dict):
        items = field.items()
    elif isinstance(field, (list, tuple)):
        items = None
    else:
        field, items = [field], [(INPUT_NAME, field)]
    if not field:
        raise TypeError(f"{INPUT_NAME}: no image in the request")
    if len(field) > MAX_IMAGES:
        raise TypeError(f"{INPUT_NAME}: {len(field)} images in one request, at most {MAX_IMAGES}")
    if items is None:
        items = ((f"{INPUT_NAME}[{i}]", value) for i, value in enumerate(field))
    return [(str(name), from_base64(name, value) if isinstance(value, str) else value) for name, value in items]


def from_base64(name, text):
    """The bytes of a base64 string: standard or URL-safe alphabet, padding optional, line breaks and
    a data: URL prefix (any case) allowed."""
    try:
        return base64.b64decode(text, validate=True)  # the usual spelling, in one C call
    except (binascii.Error, ValueError):
        pass  # any other: normalised below, which leaves the usual spelling's bytes as they are
    if text[:5].lower() == "data:":
        text = text.partition(",")[2]
    text = "".join(text.split()).rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TypeError(f"{name}: not valid base64 ({exc})") from exc


class Unreadable(object):
    """Turns Pillow's many failures on a bad file into one TypeError naming it."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if exc is None or isinstance(exc, TypeError):
            return False
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise TypeError(f"{self.name}: image dimensions too large ({exc})") from exc
        if isinstance(exc, Image.UnidentifiedImageError):
            # Pillow's own text names the in-memory buffer's address: noise for the user.
            raise TypeError(f"{self.name}: not a readable PNG, JPEG, BMP or GIF image") from exc
        if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError)):
            raise TypeError(f"{self.name}: not a readable PNG, JPEG, BMP or GIF image ({exc})") from exc
        return False


def decode_image(name, source):
    """An 8-bit grayscale array of one image file; TypeError names the file when it is unusable."""
    return read_gray(name, open_image(name, source))


def open_image(name, source):
    """The image, its header read but no pixel decoded; TypeError when it would decode too large.

    A plain 8-bit gray PNG (see GrayPng) comes back as a GrayPng; every other file as Pillow opened it.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    elif not hasattr(source, "read"):
        raise TypeError(f"{name}: expected an image file, got {type(source).__name__}")
    if isinstance(source, io.BytesIO):  # Pillow reads a file from its start, and so does GrayPng
        png = GrayPng.parse(source.getvalue())
        if png is not None:
            return png
    return open_with_pillow(name, source)


def open_with_pillow(name, source):
    """The file as Pillow opens it, header read, no pixel decoded; TypeError when it would decode too large."""
    with Unreadable(name):
        image = shrink_jpeg(Image.open(source, formats=FORMATS))
    width, height = image.size
    if not width or not height:
        raise TypeError(f"{name}: image is {width}x{height} pixels")
    cost = decoded_bytes(image)
    if cost > MAX_IMAGE_BYTES:
        raise TypeError(f"{name}: a {width}x{height} {image.mode} image decodes to {cost // MIB} MiB, "
                        f"at most {MAX_IMAGE_BYTES // MIB} MiB")
    return image


def decoded_bytes(image):
    """Bytes of pixels that decoding `image` costs (size and mode from the header; JPEG after its draft)."""
    width, height = image.size
    if isinstance(image, GrayPng):
        return width * height  # 8-bit gray: a byte a pixel, stored and unpacked
    mode = image.mode
    if mode in ("1", "L", "P"):
        stored = 1
    elif mode.startswith("I;16"):
        stored = 2
    else:
        stored = 4  # Pillow keeps every other mode in 4 bytes a pixel
    wide = any(";16" in str(tile[3]) for tile in (image.tile or ()) if len(tile) > 3)
    unpacked = len(image.getbands()) * (2 if wide else 1)  # a 16-bit RGBA row is 8 bytes a pixel
    return width * height * max(stored, unpacked)


def read_gray(name, image):
    """Decode an opened image into an upright 8-bit gray array, reduced to WORK_SIDE when larger."""
    if isinstance(image, GrayPng):
        try:
            if image.size[0] * image.size[1] <= SMALL_PIXELS:  # the usual digit: nothing to reduce or to fail later
                return image.small_pixels()
            decoded = image.decode()
        except (ValueError, MemoryError):  # a broken stream or filter byte: Pillow's reading of the file says what
            return read_gray(name, open_with_pillow(name, io.BytesIO(image.data)))
        if max(image.size) <= WORK_SIDE:  # nothing to reduce: nothing else can fail
            return gray_array(decoded)
        with Unreadable(name):
            return gray_array(reduce_large(decoded))  # "L", no transparency: to_gray's answer without its checks
    with Unreadable(name):
        try:
            image.load()
            return to_gray(orient(reduce_large(image)))
        finally:
            image.close()  # frees the decoded pixels now, not when the request's list of images goes


def read_grays(opened):
    """read_gray of each of a request's opened images, in order; the small GrayPngs of one width,
    the usual batch of digits, decoded together (see unfilter_together)."""
    if len(opened) == 1:
        return [read_gray(*opened[0])]  # nothing to decode together
    grays = [None] * len(opened)
    widths = {}
    for i, (_, image) in enumerate(opened):
        if isinstance(image, GrayPng) and image.size[0] * image.size[1] <= SMALL_PIXELS:
            widths.setdefault(image.size[0], []).append(i)
    for members in widths.values():
        if len(members) > 1:
            for i, pixels in zip(members, unfilter_together([opened[i][1] for i in members])):
                grays[i] = pixels
    return [gray if gray is not None else read_gray(name, image) for gray, (name, image) in zip(grays, opened)]


def unfilter_together(pngs):
    """The pixels of GrayPngs of one width (None for those whose stream is not whole), their rows
    inflated one file at a time and unfiltered in one call of Pillow's PNG decoder over them all.

    PNG unfilters an image's first row against a row of zeros; a zero row of filter type 0 between
    two images is that row, so each image comes out exactly as it would alone.
    """
    width = pngs[0].size[0]
    line = width + 1  # a filter-type byte, then the row
    rows, starts, top = [], [], 0
    for png in pngs:
        size = png.size[1] * line
        try:
            raw = zlib.decompressobj().decompress(png.stream, size)  # never more than the pixels
        except zlib.error:
            raw = b""
        if len(raw) == size and max(raw[::line]) <= 4:  # whole, and filter types 0-4 only
            rows.append(raw)
            starts.append(top)
            top += png.size[1] + 1
        else:
            starts.append(None)  # read alone by read_gray, which says what is wrong
    if not rows:
        return starts
    stacked = Image.frombytes("L", (width, top - 1), zlib.compress(bytes(line).join(rows), 0), "zip", "L")
    pixels = gray_array(stacked)
    return [None if start is None else pixels[start:start + png.size[1]] for start, png in zip(starts, pngs)]


class GrayPng(object):
    """An 8-bit gray, non-interlaced PNG of intact, plain chunks: its pixels decoded in one call.

    Pillow's PNG plugin spends ~40 us of Python per file on opening and loading, more than all the
    rest of a 28x28 digit's preprocessing; this reads the chunks once and hands the pixel stream to
    Pillow's own PNG decoder. A file it does not accept in full (another colour type or depth,
    interlace, a bad checksum, a chunk outside PLAIN_PNG_CHUNKS, too large a size) is Pillow's to read.
    """

    def __init__(self, data, size, stream):
        self.data, self.size, self.stream = data, size, stream

    @classmethod
    def parse(cls, data):
        """A GrayPng of the file's bytes, or None when it is not such a PNG or would decode too large."""
        if not data.startswith(PNG_SIGNATURE) or len(data) < 8 + PNG_IHDR.size:
            return None
        length, kind, width, height, depth, colour, compression, method, interlace, crc = PNG_IHDR.unpack_from(data, 8)
        if ((length, kind, depth, colour, compression, method, interlace) != (13, b"IHDR", 8, 0, 0, 0, 0)
                or not 0 < width * height <= MAX_IMAGE_BYTES or zlib.crc32(data[12:29]) != crc):
            return None
        view, end, position, stream, after_stream = memoryview(data), len(data), 8 + PNG_IHDR.size, [], False
        while position + 12 <= end:
            length, kind = PNG_CHUNK.unpack_from(data, position)
            body, tail = position + 8, position + 8 + length
            if tail + 4 > end:
                return None
            if kind == b"IDAT":
                if after_stream:  # Pillow decodes the first run of IDAT chunks only
                    return None
                stream.append(view[body:tail])
            elif kind == b"IEND":
                return cls(data, (width, height), b"".join(stream)) if stream else None
            elif PLAIN_PNG_CHUNKS.get(kind) != length:
                return None
            elif stream:
                after_stream = True
            elif zlib.crc32(view[position + 4:tail]) != PNG_CRC.unpack_from(data, tail)[0]:
                return None  # Pillow checks the chunks before the pixels (only those)
            position = tail + 4
        return None

    def decode(self):
        """The pixels as an "L" image; ValueError when the stream is broken or short."""
        return Image.frombytes("L", self.size, self.stream, "zip", "L")

    def small_pixels(self):
        """The pixels of a small image (SMALL_PIXELS) as a read-only uint8 array; ValueError as decode()."""
        return codec_pixels(self) if CODEC_CALLS else gray_array(self.decode())


def codec_pixels(png):
    """small_pixels by Pillow's own PNG decoder and raw encoder, called as Image.frombytes and
    Image.tobytes call them but without their Python wrappers: 6.5 us where those take 12.4
    (Pillow 13), of a digit's ~105 us. Decoded into a canvas kept by this thread (no Image.new a digit).
    """
    width, height = size = png.size
    # Pillow's core image of the canvas, kept rather than its Image (whose .im and .size are
    # properties now): ~0.9 us less.
    kept = getattr(CANVASES, "core", None)
    if kept is None or kept[0] != size:
        kept = CANVASES.core = (size, Image.new("L", size).im)
    canvas = kept[1]
    box = (0, 0, width, height)
    decoder = Image.core.zip_decoder("L", "L")
    decoder.setimage(canvas, box)
    left, error = decoder.decode(png.stream)
    if left >= 0 or error:  # Image.frombytes's two checks, in its words
        raise ValueError("not enough image data" if left >= 0 else "cannot decode image data")
    encoder = Image.core.raw_encoder("L", "L")
    encoder.setimage(canvas, box)
    _, done, pixels = encoder.encode(max(65536, width * height))  # room for every row: one call
    if done != 1 or len(pixels) != width * height:
        return gray_array(png.decode())  # not expected: the public calls read it again
    return np.frombuffer(pixels, np.uint8).reshape(height, width)


def shrink_jpeg(image):
    """Let the JPEG decoder scale down and convert to gray itself (a large speed-up on photos)."""
    if image.format == "JPEG" and image.mode in ("RGB", "L", "YCbCr"):
        width, height = image.size
        scale = max(1, min(width, height) // JPEG_DRAFT_SIDE)
        image.draft("L", (width // scale, height // scale))
    return image


def reduce_large(image):
    """Box-average an image with a side over WORK_SIDE down to it, a band of rows at a time."""
    factor = -(-max(image.size) // WORK_SIDE)
    if factor < 2:
        return image
    if image.mode == "PA" or "transparency" in image.info:
        working = "RGBA"  # a palette or colour key cannot be averaged; its alpha can
    elif image.mode in ("1", "P"):
        working = "L"
    elif image.mode.startswith("I;16"):
        working = "I"
    else:
        working = image.mode
    width, height = image.size
    reduced = Image.new(working, (-(-width // factor), -(-height // factor)))
    rows = factor * max(1, STRIP_PIXELS // (width * factor))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        if strip.mode != working:
            strip = strip.convert(working)
        reduced.paste(strip.reduce(factor), (0, top // factor))
    reduced.info = dict(image.info)  # keeps the EXIF orientation for orient()
    reduced.info.pop("transparency", None)  # applied: it is in the alpha band now
    return reduced


def orient(image):
    """Apply the EXIF orientation phones write (JPEG, PNG eXIf, XMP), so the digit is upright."""
    try:
        orientation = image.getexif().get(ORIENTATION, 1)
    except Exception:  # a malformed EXIF block says nothing usable about orientation; the pixels are fine
        return image
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def to_gray(image):
    """Any Pillow mode as 8-bit gray; transparency is composited onto a background that contrasts with the ink."""
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    mode = image.mode
    if mode in ("L", "1", "P", "RGB", "CMYK", "YCbCr"):
        return gray_array(image if mode == "L" else image.convert("L"))
    if mode.startswith("I;16") or mode in ("I", "F"):
        return wide_to_gray(np.asarray(image, np.float32 if mode == "F" else np.int32))
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return flatten_alpha(np.asarray(image.convert("LA")))
    return np.asarray(image.convert("RGB").convert("L"))


def gray_array(image):
    """An "L" image's pixels (read-only): its bytes, without np.asarray's array-interface overheads."""
    width, height = image.size
    return np.frombuffer(image.tobytes(), np.uint8).reshape(height, width)


def wide_to_gray(values):
    """16/32-bit or float levels as 8-bit: scaled by the bit depth the values actually use.

    A 16-bit PNG holding 0-255 stays as is; 0-4095 (12-bit) and 0-65535 are scaled to 0-255; floats
    up to 1.0 are taken as fractions.
    """
    values = np.maximum(values.astype(np.float32), 0)
    peak = float(values.max(initial=0))
    if values.dtype == np.float32 and 0 < peak <= 1.0 and not np.array_equal(values, np.round(values)):
        full = 1.0
    else:
        full = float(2 ** max(8, int(np.ceil(np.log2(peak + 1)))) - 1) if peak > 255 else 255.0
    return np.clip(values * (255.0 / full) + 0.5, 0, 255).astype(np.uint8)


def flatten_alpha(gray_alpha):
    """Composite gray+alpha onto white when the ink is dark, onto black when it is light."""
    gray = gray_alpha[..., 0].astype(np.float32)
    alpha = gray_alpha[..., 1].astype(np.float32) * (1.0 / 255.0)
    weight = alpha.sum()
    ink = float((gray * alpha).sum() / weight) if weight else 0.0
    background = 255.0 if ink < 128 else 0.0
    return (background + (gray - background) * alpha + 0.5).astype(np.uint8)


def to_batch(grays, names):
    """The [N, 784] float32 model input of N 8-bit gray images, each made an MNIST digit by to_mnist.

    A 28x28 image that is an MNIST digit already (the usual request) is taken as it is.
    """
    digits = [gray if gray.shape == (SIDE, SIDE) and mnist_like(gray) else to_mnist(gray, name)
              for gray, name in zip(grays, names)]
    # One conversion of the list: ~1 us on one digit, where joining the digits' bytes takes ~4 us
    # (on 256 digits ~40 us slower than the join, of a ~15 ms batch).
    return np.array(digits, np.float32).reshape(len(digits), SIDE * SIDE)


def mnist_like(gray):
    """Whether an 8-bit gray image is MNIST-like already (a black border all round and ink at full
    white), so ink_levels keeps it exactly."""
    # Read from its bytes: a few C calls (~1 us on a 28x28 digit), where numpy's reductions
    # cost ~8 us of per-call overheads on an image this small.
    pixels = gray.tobytes()
    width = gray.shape[1]
    border = pixels[:width] + pixels[-width:] + pixels[::width] + pixels[width - 1::width]
    return border == bytes(len(border)) and b"\xff" in pixels


def to_mnist(gray, name="image"):
    """A 28x28 uint8 MNIST digit (white on black) from an 8-bit gray image of any size.

    TypeError when the image holds no ink (blank, uniform, or noise only).
    """
    pixels = ink_levels(gray, name)
    if pixels.shape == (SIDE, SIDE):
        return pixels
    return centre_digit(crop_to_ink(pixels))


def ink_levels(gray, name="image"):
    """White ink at full range on a zero background, whatever the paper's level, light and polarity.

    The paper is modelled as a smooth surface (uneven light), fitted robustly so the ink does not
    pull it; ink is what stands well off it, on whichever side stands off more (dark ink on light
    paper, or a light digit on a dark or mid-grey ground).
    """
    if mnist_like(gray):
        return gray  # kept exactly
    border = np.concatenate((gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]))
    levels = gray.astype(np.float32)
    if max(gray.shape) <= 2 * SIDE:  # too small for uneven light to matter: the border's level will do
        residual = levels - float(median_level(border))
    else:
        residual = levels - fit_paper(levels)
    noise = noise_level(residual)
    floor = NOISE_SIGMAS * noise
    light, dark = strength(residual, floor), strength(-residual, floor)
    ink = residual if light >= dark else -residual
    stroke = stroke_level(ink, floor)
    if stroke - floor < MIN_CONTRAST:
        raise TypeError(f"{name}: no digit found: the image has no ink standing off its background "
                        f"(a blank, uniform or noise-only image)")
    scaled = (ink - floor) * (255.0 / (stroke - floor))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def fit_paper(levels):
    """A quadratic surface through the background, refitted on the pixels that lie close to it."""
    height, width = levels.shape
    step = max(1, max(height, width) // 32)  # about 32x32 samples: plenty for six coefficients
    rows, cols = np.mgrid[0:height:step, 0:width:step]
    samples = levels[::step, ::step].ravel()
    y, x = rows.ravel() / float(height), cols.ravel() / float(width)
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
    centre = median_level(samples)
    keep = np.abs(samples - centre) <= max(2.0 * mad(samples), 8.0)
    coeffs = np.zeros(6)
    coeffs[0] = centre
    for _ in range(4):
        if keep.sum() < 12:
            break
        previous = keep
        chosen = basis[keep]
        # The normal equations: a 6x6 solve, where lstsq's SVD of the whole sample costs ~100x more.
        # einsum, not @: a threaded BLAS call costs milliseconds of thread hand-offs on a busy machine.
        normal = np.einsum("ij,ik->jk", chosen, chosen) + 1e-9 * np.eye(6)
        coeffs = np.linalg.solve(normal, np.einsum("ij,i->j", chosen, samples[keep]))
        residual = samples - np.einsum("ij,j->i", basis, coeffs)
        keep = np.abs(residual) <= max(3.0 * mad(residual[keep]), 4.0)
        if np.array_equal(keep, previous):
            break
    x = np.arange(width, dtype=np.float32)[None, :] / width
    y = np.arange(height, dtype=np.float32)[:, None] / height
    c = coeffs.astype(np.float32)
    # Summed as a row, a column and one product: three full-size operations, not ten.
    return (c[0] + c[1] * x + c[3] * x * x) + (c[2] * y + c[5] * y * y) + (c[4] * y) * x


def mad(values):
    """The spread of values as a normal deviation, from their median absolute deviation."""
    if not values.size:
        return 0.0
    return 1.4826 * middle(np.abs(values - middle(values)))


def middle(values):
    """The median (the upper one of an even count), without np.median's overheads."""
    rank = values.size // 2
    if values.size <= SORT_LIMIT:
        # A digit's levels repeat (most are 0): np.partition's introselect slows down several times
        # on them, while a small sort does not.
        return float(np.sort(values)[rank])
    return float(np.partition(values, rank)[rank])


def noise_level(residual):
    """The paper's noise (a normal deviation), from pixels near the fitted surface (a sample of them)."""
    sample = residual.ravel()[::max(1, residual.size // 4096)]
    near = sample[np.abs(sample) < 32]
    return mad(near) if near.size else 0.0


def strength(ink, floor):
    """How strongly one side stands off the paper: the summed squared excess past the floor.

    Squared, so a few strong strokes outweigh a wide patch of slightly lighter paper.
    """
    excess = ink[ink > floor] - floor
    return float((excess * excess).sum())


def stroke_level(ink, floor):
    """The level of the strokes' cores: a high percentile of the ink pixels, not a single noisy maximum."""
    strokes = ink[ink > floor]
    if strokes.size < 3:
        return floor
    if strokes.size <= 20:
        return float(strokes.max())
    rank = int(strokes.size * 0.9)
    return float(np.partition(strokes, rank)[rank])


def median_level(values):
    """int(np.median(values)) for uint8 values, without np.median's ~30 us of overhead per call."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return int(ordered[middle])
    return (int(ordered[middle - 1]) + int(ordered[middle])) // 2


def crop_to_ink(pixels):
    """The bounding box of the ink (a view, not a copy); isolated specks of noise do not widen it."""
    ink = pixels > INK_LEVEL * 255
    if pixels.shape[0] > SIDE and pixels.shape[1] > SIDE:
        # A pixel counts when its 3x3 neighbourhood holds ink too: strokes pass, lone specks do not.
        solid = np.asarray(Image.fromarray(pixels).filter(ImageFilter.BoxBlur(1))) > INK_LEVEL * 255 / 2
        if solid.any():
            ink = ink & solid
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
    # sorted() is stable with reverse=True too: equal scores keep digit order.
    ranked = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:TOP_K]
    names = DIGIT_NAMES if len(scores) <= len(DIGIT_NAMES) else [str(digit) for digit in range(len(scores))]
    return {"predicted_label": names[ranked[0]],
            "scores": [[names[digit], "%.3f" % scores[digit]] for digit in ranked]}


def codec_calls_work():
    """Whether codec_pixels may serve: Pillow's codecs take the arguments Image.frombytes and
    Image.tobytes give them and answer as those do, on a small PNG of every filter type."""
    rows = bytes([0, 7, 200, 1, 5, 250, 2, 9, 3, 3, 40, 60, 4, 1, 255])  # 5 rows of 2: filters 0-4
    png = GrayPng(b"", (2, 5), zlib.compress(rows))
    try:
        return codec_pixels(png).tobytes() == gray_array(png.decode()).tobytes()
    except Exception:  # another Pillow's private codec signatures: the public calls serve
        return False


CODEC_CALLS = codec_calls_work()  # checked once, at import
