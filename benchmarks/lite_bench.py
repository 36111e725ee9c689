"""Serving on LiteRT against a baseline tree: start-up (cold and warm cache), memory, 256-image batches.

    python benchmarks/lite_bench.py MODEL_DIR --before OLD_TREE [--after NEW_TREE] [--duration 10]
                                    [--json-out FILE]

OLD_TREE and NEW_TREE are checkouts of this project (e.g. `git worktree add /tmp/before HEAD~5`);
each runs as `python -m modelarts_mnist serve MODEL_DIR --port 0` (the defaults: gunicorn, one
worker per core) with its own sources first on PYTHONPATH. For each tree, in one run:
- cold: seconds from start to /health 200 with an empty MODELARTS_MNIST_CACHE (conversion included);
- warm: the same with the cache the cold start left;
- resident memory (MB) of every serve process when healthy (master first), and of the workers after the load;
- batch: wrk (one thread, keep-alive, c=4, `--duration` s) POSTing JSON {"images": [256 base64 PNGs]}:
  images/s = requests/s x 256, and server CPU ms per image; whether TensorFlow is mapped in any process.
Ratios are NEW / OLD from the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import (batch_json, lua_script, parse_wrk_report, process_cpu_seconds,  # noqa: E402
                         process_tree, rss_mb, test_digits, tree_environ)

from modelarts_mnist.client import is_healthy  # noqa: E402

BATCH_SIZE = 256
CONNECTIONS = 4


def tensorflow_mapped(pid: int) -> bool:
    """Whether the process has TensorFlow's libraries loaded."""
    try:
        return "/tensorflow/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def start(tree: Path, model_dir: Path, cache: Path) -> tuple[subprocess.Popen, str, float]:
    """`serve` from tree's sources; (process, url, seconds from start to /health 200)."""
    env = {**os.environ, "MODELARTS_MNIST_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2", **tree_environ(tree)}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "modelarts_mnist", "serve", str(model_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tree)
    match = re.search(r"http://[\d.]+:\d+", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit(f"serve from {tree} did not start")
    url = match.group(0)
    while not is_healthy(url, timeout=5):
        if proc.poll() is not None:
            raise SystemExit(f"serve from {tree} exited before it was healthy")
        time.sleep(0.02)
    return proc, url, time.monotonic() - started


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM and wait."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure_tree(tree: Path, model_dir: Path, script: Path, duration: float) -> dict:
    """Cold and warm start, memory and the batch figure for one source tree."""
    with tempfile.TemporaryDirectory(prefix="lite-bench-cache-") as cache:
        proc, url, cold = start(tree, model_dir, Path(cache))
        pids = process_tree(proc.pid)
        healthy_rss = [round(rss_mb(pid), 1) for pid in pids]
        tf_loaded = [tensorflow_mapped(pid) for pid in pids]
        cpu_before = process_cpu_seconds(pids)
        done = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--timeout", "20s",
                               "-s", str(script), url + "/"], capture_output=True, text=True, timeout=duration + 120)
        batch = parse_wrk_report(done.stdout)
        cpu = process_cpu_seconds(pids) - cpu_before
        loaded_rss = [round(rss_mb(pid), 1) for pid in pids]
        stop(proc)
        proc, url, warm = start(tree, model_dir, Path(cache))
        warm_rss = [round(rss_mb(pid), 1) for pid in process_tree(proc.pid)]
        stop(proc)
    images = batch["requests"] * BATCH_SIZE
    return {"tree": str(tree), "cold_start_s": round(cold, 2), "warm_start_s": round(warm, 2),
            "rss_healthy_mb": healthy_rss, "rss_after_load_mb": loaded_rss, "rss_warm_start_mb": warm_rss,
            "tensorflow_mapped": tf_loaded, "batch_images_per_s": round(batch["rps"] * BATCH_SIZE),
            "batch_errors": batch["non2xx"] + batch["errors"] + batch["timeouts"],
            "server_cpu_ms_per_image": round(cpu * 1e3 / max(images, 1), 3)}


def ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}x" if old else "-"


def report(before: dict, after: dict) -> str:
    """The side-by-side table."""
    def workers(row: dict, key: str) -> str:
        return " / ".join(f"{mb:.0f}" for mb in row[key][1:]) + f" (master {row[key][0]:.0f})"

    lines = ["| figure | before | after | after/before |", "|---|---|---|---|"]
    for name, key in (("serve start to /health 200, empty cache (s)", "cold_start_s"),
                      ("serve start to /health 200, warm cache (s)", "warm_start_s"),
                      ("256-image JSON batches, c=4: images/s", "batch_images_per_s"),
                      ("server CPU per image (ms)", "server_cpu_ms_per_image")):
        lines.append(f"| {name} | {before[key]} | {after[key]} | {ratio(after[key], before[key])} |")
    for name, key in (("RSS per worker when healthy (MB)", "rss_healthy_mb"),
                      ("RSS per worker after the batch load (MB)", "rss_after_load_mb"),
                      ("RSS per worker, warm start (MB)", "rss_warm_start_mb")):
        lines.append(f"| {name} | {workers(before, key)} | {workers(after, key)} | "
                     f"{ratio(max(after[key][1:]), max(before[key][1:]))} |")
    lines.append(f"| TensorFlow mapped (master, workers...) | {before['tensorflow_mapped']} | "
                 f"{after['tensorflow_mapped']} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--before", type=Path, required=True, help="baseline source tree")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lite-bench-") as folder:
        pngs, _ = test_digits(BATCH_SIZE)
        body = Path(folder) / "batch.body"
        body.write_bytes(batch_json(pngs))
        script = Path(folder) / "batch.lua"
        script.write_text(lua_script(body, "application/json"))
        rows = {}
        for name in ("before", "after"):
            print(f"measuring {name}: {getattr(args, name)}", file=sys.stderr)
            rows[name] = measure_tree(getattr(args, name).resolve(), args.model_dir.resolve(), script,
                                      args.duration)
    print(report(rows["before"], rows["after"]))
    print(json.dumps(rows, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
