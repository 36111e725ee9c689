"""The costliest 12 MB bodies we could build: time to answer and peak memory per worker, vs a digit POST.

Usage: python benchmarks/attack_bench.py VERSION_DIR [--workers 1] [--only NAME ...]

VERSION_DIR is a trained version (e.g. `train` output V0001); it is packaged with the repository's
current customize_service.py and config.json in a temporary copy and served by a real
`modelarts-mnist serve --port 0`. Each body is POSTed once on a fresh connection; the table shows
the status, the seconds to the answer, and each worker's peak resident memory during the request
over its resident memory before it (VmHWM, reset through /proc/PID/clear_refs before each body).
Goal: every row under 2 s and 100 MB.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import importlib.util
import io
import json
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw

LIMIT = 12 * 1024 * 1024
BENCH_DIR = Path(__file__).resolve().parent


def load_serve_bench():
    """benchmarks/serve_bench.py as a module: its server start-up and /proc helpers."""
    spec = importlib.util.spec_from_file_location("serve_bench", BENCH_DIR / "serve_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- bodies

def multipart(files: list[tuple[str, bytes]], field: str = "images") -> tuple[bytes, str]:
    boundary = "attackbenchboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def as_json(value) -> tuple[bytes, str]:
    return json.dumps(value).encode(), "application/json"


def fill(unit: bytes, head: bytes = b"", tail: bytes = b"", size: int = LIMIT - 1024) -> bytes:
    """head + unit repeated to about `size` bytes + tail."""
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int, depth: int, colour: int, bands: int) -> bytes:
    """A valid PNG of zeros: tiny compressed, side x side pixels of `bands` bands at `depth` bits."""
    row = b"\0" * (1 + side * bands * depth // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * 64) for _ in range(side // 64)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def inked(mode: str, size: tuple[int, int], fmt: str, **options) -> bytes:
    """A real image of the size with a thick digit-like stroke, so user code processes all of it."""
    image = Image.new(mode, size, "white")
    width, height = size
    ImageDraw.Draw(image).line([(width * 0.3, height * 0.2), (width * 0.7, height * 0.2), (width * 0.45, height * 0.8)],
                               fill="black", width=max(3, width // 12))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(inked("RGB", (64, 64), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def up_to_limit(one: bytes, wrap: Callable[[list[bytes]], tuple[bytes, str]]) -> tuple[bytes, str]:
    """As many copies of one file as fit in 12 MB, wrapped as a body."""
    count = max(1, int(LIMIT * 0.97 / (len(one) * (1.34 if wrap is b64_json else 1.0) + 200)))
    count = min(count, 990)  # past 1,000 parts the form is refused before any header is read
    return wrap([one] * count)


def files_form(files: list[bytes]) -> tuple[bytes, str]:
    return multipart([(f"{i}.img", data) for i, data in enumerate(files)])


def b64_json(files: list[bytes]) -> tuple[bytes, str]:
    return as_json({"images": [base64.b64encode(data).decode() for data in files]})


def attacks() -> dict[str, Callable[[], tuple[bytes, str]]]:
    """name -> builder of (body, content type); the first is the baseline."""
    digit = inked("L", (28, 28), "PNG")
    return {
        "baseline: one 28x28 digit PNG": lambda: files_form([digit]),
        "PNG 4096^2 16-bit RGBA bombs (form)": lambda: up_to_limit(png_bomb(4096, 16, 6, 4), files_form),
        "PNG 4096^2 16-bit RGBA bombs (base64 JSON)": lambda: up_to_limit(png_bomb(4096, 16, 6, 4), b64_json),
        "PNG 2896^2 16-bit RGBA bombs, just under per image": lambda: up_to_limit(png_bomb(2896, 16, 6, 4), files_form),
        "PNG 4096^2 RGB with ink (at the image limit)": lambda: files_form([inked("RGB", (4096, 4096), "PNG")]),
        "PNG 4096^2 RGB with ink x2": lambda: files_form([inked("RGB", (4096, 4096), "PNG")] * 2),
        "PNG 8192^2 gray with ink (at the image limit)": lambda: files_form([inked("L", (8192, 8192), "PNG")]),
        "PNG 8192^2 gray with ink x2": lambda: files_form([inked("L", (8192, 8192), "PNG")] * 2),
        "PNG 724^2 gray with ink x256 (past the request limit)": lambda: files_form([inked("L", (724, 724), "PNG")] * 256),
        "PNG 512^2 gray with ink x256 (at the request limit)": lambda: files_form([inked("L", (512, 512), "PNG")] * 256),
        "PNG 256^2 gray with ink x256": lambda: files_form([inked("L", (256, 256), "PNG")] * 256),
        "PNG 28^2 dark-on-light x256": lambda: files_form([inked("L", (28, 28), "PNG")] * 256),
        "PNG 1448^2 RGBA with ink x8": lambda: files_form([inked("RGBA", (1448, 1448), "PNG")] * 8),
        "JPEG declaring 65500^2 (form)": lambda: up_to_limit(jpeg_declaring(65500, 65500), files_form),
        "JPEG 4096^2 with ink x2": lambda: files_form(
            [inked("RGB", (4096, 4096), "JPEG", quality=90)] * 2),
        "GIF 4096^2, 100 frames": lambda: files_form([gif_frames(4096, 100)] * 2),
        "GIF of 600k tiny frames": lambda: files_form([gif_tiny_frames(LIMIT - 4096)]),
        "APNG 1024^2 RGB, 40 frames": lambda: files_form([apng_frames(1024, 40)]),
        "TIFF 4096^2 deflate, 10 pages x2": lambda: files_form([tiff_pages(4096, 10)] * 2),
        "WebP 4096^2 lossless x2": lambda: files_form([inked("RGB", (4096, 4096), "WEBP", lossless=True)] * 2),
        "BMP 16-bit-per-band header bombs": lambda: up_to_limit(bmp_declaring(30000, 30000), files_form),
        "JSON 4M empty strings": lambda: (fill(b'"",', b"[", b'""]'), "application/json"),
        "JSON 6M nested lists": lambda: (b"[" * (LIMIT // 2 - 8) + b"]" * (LIMIT // 2 - 8), "application/json"),
        "JSON 6M zeros": lambda: (fill(b"0,", b"[", b"0]"), "application/json"),
        "JSON 1M keys": lambda: (fill(b'"k":0,', b"{", b'"k":0}'), "application/json"),
        "JSON 200k nested lists (past Python's stack)": lambda: (b"[" * 200_000 + b"]" * 200_000, "application/json"),
        "JSON 300k numbers, 4M commas in a string": lambda: as_json({"s": "," * 4_000_000, "n": [0] * 300_000}),
        "JSON 262,144 values at the limit": lambda: as_json({"x": ["abcdefghij"] * 262_000}),
        "JSON 256 base64 PNGs declaring 4096^2 gray": lambda: b64_json([png_bomb(4096, 8, 0, 1)] * 256),
        "JSON 256 base64 PNGs 512^2 with ink (at the request limit)": lambda: b64_json(
            [inked("L", (512, 512), "PNG")] * 256),
        "form: 990 tiny GIFs": lambda: files_form([inked("L", (8, 8), "GIF")] * 990),
        "JSON 2M commas in one string": lambda: as_json({"images": "," * 2_000_000}),
        "JSON tiny base64 GIFs (340k strings)": lambda: (fill(b'"R0lGODlhAQABAAAAACw=",', b"[", b'"a"]'),
                                                         "application/json"),
        "form: 12 MB of empty parts": lambda: (fill(b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n',
                                                    tail=b"--b--\r\n"), "multipart/form-data; boundary=b"),
        "form: 1 MB of empty parts": lambda: (fill(b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n',
                                                   tail=b"--b--\r\n", size=1024 * 1024 - 100),
                                              "multipart/form-data; boundary=b"),
        "urlencoded: 500 kB of empty fields": lambda: (fill(b"a&", size=499_000), "application/x-www-form-urlencoded"),
    }


def gif_frames(side: int, frames: int) -> bytes:
    images = [Image.new("P", (side, side)) for _ in range(frames)]
    for i, image in enumerate(images):
        image.putpixel((i, i), 1)
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def gif_tiny_frames(size: int) -> bytes:
    """A GIF of 2x2 frames, as many as fit in `size` bytes (about 19 bytes each)."""
    two = gif_frames_of([Image.new("P", (2, 2), i % 2) for i in range(2)])
    three = gif_frames_of([Image.new("P", (2, 2), i % 2) for i in range(3)])
    frame = three[len(two) - 1:-1]  # the bytes one more frame adds
    return two[:-1] + frame * ((size - len(two)) // len(frame)) + b";"


def gif_frames_of(images: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], optimize=False)
    return buffer.getvalue()


def apng_frames(side: int, frames: int) -> bytes:
    images = [Image.new("RGB", (side, side), (i, 0, 0)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "PNG", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def tiff_pages(side: int, pages: int) -> bytes:
    images = [Image.new("RGB", (side, side)) for _ in range(pages)]
    buffer = io.BytesIO()
    images[0].save(buffer, "TIFF", save_all=True, append_images=images[1:], compression="tiff_deflate")
    return buffer.getvalue()


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(inked("RGB", (8, 8), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


# ---------------------------------------------------------------- measuring

def worker_pids(bench, server) -> list[int]:
    return [pid for pid in bench.process_tree(server.proc.pid) if pid != server.proc.pid]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def post(server, body: bytes, content_type: str) -> tuple[int, str, float]:
    """(status, X-Error-Detail, seconds) of one POST / on a new connection."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=120)
    start = time.perf_counter()
    connection.request("POST", "/", body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    connection.close()
    return response.status, response.getheader("X-Error-Detail") or "", elapsed


def measure(bench, server, body: bytes, content_type: str) -> dict:
    pids = worker_pids(bench, server)
    before = {}
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before[pid] = status_kb(pid, "VmRSS")
    status, detail, seconds = post(server, body, content_type)
    peaks = [(status_kb(pid, "VmHWM") - before[pid]) / 1024 for pid in pids]
    return {"status": status, "seconds": seconds, "peak_mb": max(peaks), "detail": detail,
            "rss_mb": max(before.values()) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", type=Path, help="a trained version folder (holding model/)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="substrings of the attack names to run")
    args = parser.parse_args()
    bench = load_serve_bench()
    builders = attacks()
    names = [name for name in builders if not args.only or name.startswith("baseline")
             or any(part in name for part in args.only)]
    with tempfile.TemporaryDirectory() as workdir:
        server = bench.start_serve(bench.packaged(args.version, Path(workdir)), args.workers)
        try:
            print(f"serve --workers {args.workers}: healthy in {server.start_seconds:.1f} s")
            print(f"{'body':54} {'MB':>5} {'status':>6} {'s':>6} {'x base':>7} {'peak MB':>8}  detail")
            base = None
            for name in names:
                body, content_type = builders[name]()
                assert len(body) <= LIMIT, (name, len(body))
                row = measure(bench, server, body, content_type)
                base = base or row["seconds"]
                print(f"{name:54} {len(body) / 1e6:5.1f} {row['status']:6d} {row['seconds']:6.2f} "
                      f"{row['seconds'] / base:7.0f} {row['peak_mb']:8.1f}  {row['detail'][:90]}", flush=True)
            print(f"worker resident memory before the last body: {row['rss_mb']:.0f} MB")
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
