"""Preprocessing time per image (28x28 PNG, 640x480 photo-like JPEG, a 256-image JSON batch) and in-process latency.

Usage: python benchmarks/preprocess_bench.py [--runs 2000] [--before OLD_TREE] [--model MODEL_DIR [--calls 500]]

Times MnistService._preprocess of this tree's model/customize_service.py, single-threaded and warm:
one multipart image per call for the PNG and the JPEG, and {"images": [256 base64 PNGs]} (JSON as
parsed) per call for the batch, whose figure is per image. With --before, the same for OLD_TREE's
customize_service.py (e.g. `git worktree add /tmp/before HEAD~3`), the two timed in alternating
rounds so that other load on the machine hits both, and the ratio after/before. With --model
(a packaged model folder, e.g. `modelarts-mnist package V0001` output), it also times
service.inference on one 28x28 PNG (median and p99).
"""
from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from modelarts_mnist.artifacts import INFERENCE_CODE, artifact_path
from modelarts_mnist.embedded import load_embedded

BATCH_SIZE = 256
ROUNDS = 4


def load_inference_code(path: Path | None = None, tag: str = "bench"):
    """customize_service.py (this tree's, or the one at path) as a module."""
    spec = importlib.util.spec_from_file_location(f"customize_service_{tag}", path or artifact_path(INFERENCE_CODE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_images() -> dict[str, bytes]:
    """A real 28x28 test digit as PNG, and the same digit written dark on a noisy 640x480 photo as JPEG."""
    digit = load_embedded()[2][0]
    png = io.BytesIO()
    Image.fromarray(digit).save(png, "PNG")
    rng = np.random.default_rng(0)
    paper = 190 + 20 * np.linspace(0, 1, 640)[None, :] + rng.normal(0, 6, (480, 640))
    ink = np.asarray(Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC), np.float32) / 255
    paper[140:340, 220:420] *= 1 - 0.8 * ink
    photo = np.dstack([paper, paper * 0.97, paper * 0.93]).clip(0, 255).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(photo).save(jpeg, "JPEG", quality=90)
    return {"28x28 PNG": png.getvalue(), "640x480 JPEG": jpeg.getvalue()}


def batch_request() -> dict:
    """{"images": [...]}: the first 256 held-out digits as base64 PNGs, as a JSON request parses."""
    images = []
    for digit in load_embedded()[2][:BATCH_SIZE]:
        png = io.BytesIO()
        Image.fromarray(digit).save(png, "PNG")
        images.append(base64.b64encode(png.getvalue()).decode())
    return {"images": images}


def time_calls(call, runs: int, warmup: int = 20) -> list[float]:
    """Milliseconds of each of `runs` calls, after `warmup` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: list[float], per: int = 1) -> str:
    p99 = sorted(times)[max(0, int(len(times) * 0.99) - 1)]
    unit = "ms" if per == 1 else "ms per image"
    return (f"median {statistics.median(times) / per:.4f} {unit}, p99 {p99 / per:.4f} {unit} over {len(times)} calls")


def cases(images: dict[str, bytes], runs: int) -> dict[str, tuple]:
    """{name: (make the call for a module, calls per round, images per call)}."""
    batch = batch_request()
    made = {f"{name} ({len(data)} bytes)": (lambda code, data=data: lambda: code.MnistService._preprocess(
        None, {"images": {"x": io.BytesIO(data)}}), runs, 1) for name, data in images.items()}
    made[f"batch of {BATCH_SIZE} 28x28 PNGs, JSON base64"] = (
        lambda code: lambda: code.MnistService._preprocess(None, batch), max(10, runs // 100), BATCH_SIZE)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--before", type=Path, help="a baseline source tree, timed beside this one")
    parser.add_argument("--model", help="a packaged model folder, to time service.inference too")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    codes = {"after": load_inference_code(tag="after")}
    if args.before:
        codes = {"before": load_inference_code(args.before / INFERENCE_CODE, "before"), **codes}
    images = sample_images()
    for name, (make, runs, per) in cases(images, args.runs).items():
        times: dict[str, list[float]] = {tree: [] for tree in codes}
        for _ in range(ROUNDS if args.before else 1):
            for tree, code in codes.items():
                times[tree] += time_calls(make(code), max(1, runs // (ROUNDS if args.before else 1)))
        for tree in codes:
            label = f" [{tree}]" if args.before else ""
            print(f"preprocess {name}{label}: {summary(times[tree], per)}")
        if args.before:
            ratio = statistics.median(times["after"]) / statistics.median(times["before"])
            print(f"preprocess {name}: after/before {ratio:.2f} (median), {1 / ratio:.2f}x as fast")
    if args.model:
        from modelarts_mnist.loader import load_service

        service = load_service(args.model)
        data = images["28x28 PNG"]
        times = time_calls(lambda: service.inference({"images": {"x.png": io.BytesIO(data)}}), args.calls)
        print(f"service.inference 28x28 PNG: {summary(times)}")


if __name__ == "__main__":
    main()
