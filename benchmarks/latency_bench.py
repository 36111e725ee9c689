"""Latency of one-image POSTs to `modelarts-mnist serve`, and its time from start to /health 200.

    python benchmarks/latency_bench.py MODEL_DIR IMAGE.png [-n 500] [--workers N] [--json]

Starts `serve MODEL_DIR --port 0` itself, measures the start-to-healthy time, sends one warm-up
request, then N sequential multipart POSTs on one keep-alive connection (reconnecting when the
server closes it), and prints median, p90, p99 and max latency in milliseconds.
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from modelarts_mnist.client import is_healthy


def start_serve(model_dir: Path, workers: int | None) -> tuple[subprocess.Popen, str, int, float]:
    """Start serve on a free port; (process, host, port, seconds from start to /health 200)."""
    args = [sys.executable, "-m", "modelarts_mnist", "serve", str(model_dir), "--port", "0"]
    args += ["--workers", str(workers)] if workers else []
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    match = re.search(r"http://([\d.]+):(\d+)", proc.stdout.readline())
    if not match:
        raise SystemExit("serve did not start")
    host, port = match.group(1), int(match.group(2))
    while not is_healthy(f"http://{host}:{port}", timeout=5):
        if proc.poll() is not None:
            raise SystemExit("serve exited before it was healthy")
        time.sleep(0.02)
    return proc, host, port, time.monotonic() - started


def multipart(image: bytes, name: str) -> tuple[bytes, dict[str, str]]:
    """The body curl -F images=@name would send."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def measure(host: str, port: int, body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """Latencies (s) of n sequential POSTs, reusing the connection while the server keeps it open."""
    conn, latencies = None, []
    for _ in range(n):
        conn = conn or http.client.HTTPConnection(host, port, timeout=30)
        started = time.perf_counter()
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"POST / answered {response.status}")
        if response.will_close:
            conn.close()
            conn = None
    return latencies


def summarize(latencies: list[float]) -> dict[str, float]:
    """Median, p90, p99 and max in milliseconds."""
    ms = sorted(x * 1000 for x in latencies)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2), "p90_ms": round(pick(0.90), 2),
            "p99_ms": round(pick(0.99), 2), "max_ms": round(ms[-1], 2), "first_ms": round(latencies[0] * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    proc, host, port, ready_s = start_serve(args.model_dir, args.workers)
    try:
        body, headers = multipart(args.image.read_bytes(), args.image.name)
        result = {"workers": args.workers or "threaded", "start_to_health_200_s": round(ready_s, 2),
                  **summarize(measure(host, port, body, headers, args.n))}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    print(json.dumps(result) if args.json else "\n".join(f"{k:>22}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
