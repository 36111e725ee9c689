"""Phone photos of digits vs the clean digits: accuracy of the served package on both, same labels.

Usage: python benchmarks/photo_bench.py VERSION_DIR [--count 1000] [--seed 0] [--save-examples DIR]

VERSION_DIR is a trained version (e.g. `train` output V0001, trained on the embedded data); it is
packaged with the repository's current customize_service.py and config.json in a temporary copy.
The digits are the embedded data's 1,000 held-out test images. Each one is also rendered as a
photo of a digit written on paper (see render_photo): dark ink on textured paper under uneven
light, blurred, noisy, off-centre, slightly rotated, 0.8-1.9 megapixels, JPEG, and for one in four
stored sideways with an EXIF orientation as phones do. Both sets go through service.inference,
as multipart uploads do; the script prints both accuracies and their difference.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from modelarts_mnist.embedded import load_embedded

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import packaged  # noqa: E402

BICUBIC = Image.Resampling.BICUBIC
# EXIF orientation -> how the sensor's image lies relative to the upright one (exif_transpose undoes it)
ROTATIONS = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


def render_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A JPEG 'phone photo' of a white-on-black 28x28 digit written dark on paper."""
    width = int(rng.integers(1024, 1601))
    height = width * 3 // 4
    side = int(height * rng.uniform(0.25, 0.6))  # the digit's 28x28 field, as drawn on the page
    ink = Image.fromarray(digit).resize((side, side), BICUBIC)
    ink = ink.rotate(float(rng.uniform(-12, 12)), BICUBIC, expand=True)
    paper = paper_texture(width, height, rng)
    left = int(rng.integers(0, width - ink.width + 1))
    top = int(rng.integers(0, height - ink.height + 1))
    alpha = np.zeros((height, width), np.float32)
    alpha[top:top + ink.height, left:left + ink.width] = np.asarray(ink, np.float32) / 255
    ink_level = rng.uniform(20, 80)
    page = paper * (1 - alpha) + ink_level * (paper / 255) * alpha  # ink darkens with the light too
    page = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    blurred = np.asarray(page.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5)))), np.float32)
    noisy = blurred + rng.standard_normal((height, width), dtype=np.float32) * np.float32(rng.uniform(2, 8))
    tint = rng.uniform(0.9, 1.0, 3).astype(np.float32)
    photo = Image.fromarray(np.clip(noisy[..., None] * tint, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if rng.random() < 0.25:  # stored as the sensor saw it; the EXIF tag says how to turn it upright
        orientation = int(rng.choice(list(ROTATIONS)))
        exif = Image.Exif()
        exif[0x0112] = orientation
        photo.transpose(ROTATIONS[orientation]).save(buffer, "JPEG", quality=int(rng.integers(70, 93)), exif=exif)
    else:
        photo.save(buffer, "JPEG", quality=int(rng.integers(70, 93)))
    return buffer.getvalue()


def paper_texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Paper under a lamp: a level, a gradient and a vignette, and a faint blotchy texture."""
    x = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :]
    y = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None]
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1 - np.float32(rng.uniform(0.1, 0.35)) * (0.5 + x * np.cos(angle) + y * np.sin(angle))
    vignette = 1 - np.float32(rng.uniform(0, 0.25) * 2) * (x * x + y * y)
    blotches = Image.fromarray(rng.normal(0, 1, (12, 16)).astype(np.float32)).resize((width, height), BICUBIC)
    level = np.float32(rng.uniform(170, 235))
    return level * gradient * vignette + np.float32(rng.uniform(2, 6)) * np.asarray(blotches)


def encode_png(digit: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, "PNG")
    return buffer.getvalue()


def accuracy(service, files: list[bytes], labels: np.ndarray, batch: int = 64) -> tuple[float, float]:
    """(accuracy, milliseconds per image) of service.inference on multipart-shaped batches."""
    predicted = []
    start = time.perf_counter()
    for first in range(0, len(files), batch):
        chunk = {f"{first + i}.img": io.BytesIO(data) for i, data in enumerate(files[first:first + batch])}
        answers = service.inference({"images": chunk})
        answers = answers if isinstance(answers, list) else [answers]
        predicted += [int(a["predicted_label"]) for a in answers]
    elapsed = (time.perf_counter() - start) * 1e3 / len(files)
    return float((np.array(predicted) == labels).mean()), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", type=Path, help="a trained version folder (holding model/)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-examples", type=Path, help="write the first 8 photos here as JPEGs")
    args = parser.parse_args()
    _, _, test_x, test_y = load_embedded()
    digits, labels = test_x[:args.count], test_y[:args.count]
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    photos = [render_photo(digit, rng) for digit in digits]
    print(f"rendered {len(photos)} photos in {time.perf_counter() - start:.1f} s "
          f"(mean {np.mean([len(p) for p in photos]) / 1e3:.0f} kB)")
    if args.save_examples:
        args.save_examples.mkdir(parents=True, exist_ok=True)
        for i, photo in enumerate(photos[:8]):
            (args.save_examples / f"{i}-label{labels[i]}.jpg").write_bytes(photo)
    from modelarts_mnist.loader import load_service

    with tempfile.TemporaryDirectory() as workdir:
        service = load_service(packaged(args.version, Path(workdir)))
        clean, clean_ms = accuracy(service, [encode_png(d) for d in digits], labels)
        photo, photo_ms = accuracy(service, photos, labels)
    print(f"clean 28x28 PNG digits: accuracy {clean:.2%} ({clean_ms:.2f} ms per image)")
    print(f"phone-like photos:      accuracy {photo:.2%} ({photo_ms:.2f} ms per image)")
    print(f"difference: {100 * (clean - photo):+.2f} points (goal: within 1)")


if __name__ == "__main__":
    main()
