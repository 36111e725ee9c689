"""Preprocessing time per image (28x28 PNG, 640x480 photo-like JPEG) and in-process prediction latency.

Usage: python benchmarks/preprocess_bench.py [--runs 2000] [--model MODEL_DIR [--calls 500]]
MODEL_DIR is a packaged model folder (e.g. `modelarts-mnist package V0001` output); with it, the
script also times service.inference on one 28x28 PNG (median and p99). Single-threaded, warm.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import time

import numpy as np
from PIL import Image

from modelarts_mnist.artifacts import INFERENCE_CODE, artifact_path
from modelarts_mnist.embedded import load_embedded


def load_inference_code():
    """customize_service.py as a module."""
    spec = importlib.util.spec_from_file_location("customize_service_bench", artifact_path(INFERENCE_CODE))
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


def time_calls(call, runs: int) -> list[float]:
    """Milliseconds of each of `runs` calls, after 20 warm-up calls."""
    for _ in range(20):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: list[float]) -> str:
    p99 = sorted(times)[max(0, int(len(times) * 0.99) - 1)]
    return f"median {statistics.median(times):.3f} ms, p99 {p99:.3f} ms over {len(times)} calls"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--model", help="a packaged model folder, to time service.inference too")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    code = load_inference_code()
    images = sample_images()
    for name, data in images.items():
        times = time_calls(lambda: code.MnistService._preprocess(None, {"images": {"x": io.BytesIO(data)}}), args.runs)
        print(f"preprocess {name} ({len(data)} bytes): {summary(times)}")
    if args.model:
        from modelarts_mnist.loader import load_service

        service = load_service(args.model)
        data = images["28x28 PNG"]
        times = time_calls(lambda: service.inference({"images": {"x.png": io.BytesIO(data)}}), args.calls)
        print(f"service.inference 28x28 PNG: {summary(times)}")


if __name__ == "__main__":
    main()
