"""ModelArts' engines, measured: environment build times, `check` with and without the live part, and
`serve --runtime` against the default `serve` on the same machine in the same run (wrk, keep-alive).

    python benchmarks/runtime_bench.py MODEL_DIR [--engines NAME ...] [--duration 8]

MODEL_DIR is a packaged version (`modelarts-mnist package V0001`). Engines not yet installed are built
first (that build is what "build seconds" reports; an environment built earlier reports its own).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve_bench import ensure_wrk, lua_script, multipart, point, start_serve, test_digits

from modelarts_mnist.runtimes import describe, find_runtime, install

DEFAULT_ENGINES = ("tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64", "tf1.13-python3.7-cpu",
                   "tf1.13-python3.6-cpu")
CONCURRENCY = (1, 8)


def timed(command: list[str]) -> float:
    """Wall seconds of one command (which must succeed)."""
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def check_figures(model_dir: Path, engine: str) -> dict[str, float]:
    """`check --runtime` wall time: static only, and with the live run inside the engine."""
    base = [sys.executable, "-m", "modelarts_mnist", "check", str(model_dir), "--runtime", engine]
    timed(base + ["--no-live"])  # caches pip verdicts and the dependency layer: measure the steady state
    timed(base + ["--live"])
    return {"check_static_s": round(timed(base + ["--no-live"]), 1), "check_live_s": round(timed(base + ["--live"]), 1)}


def serve_rows(model_dir: Path, engine: str | None, script: Path, duration: float) -> list[dict]:
    """req/s, latency and server CPU per request at each concurrency, one gunicorn worker per core."""
    extra = ("--runtime", engine) if engine else ()
    server = start_serve(model_dir, None, extra)
    try:
        label = engine.split("-cuda")[0] if engine else "local"
        return [{**point("ours", label[:10], server, script, c, duration), "engine": engine or "local",
                 "start_s": round(server.start_seconds, 2)} for c in CONCURRENCY]
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--engines", nargs="+", default=list(DEFAULT_ENGINES))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk point")
    args = parser.parse_args(argv)
    ensure_wrk()
    results: dict = {"builds": {}, "checks": {}, "serve": []}
    for engine in args.engines:
        record = describe(install(find_runtime(engine), echo=lambda line: print(line, file=sys.stderr)))
        results["builds"][engine] = record.get("build_seconds")
        results["checks"][engine] = check_figures(args.model_dir, engine)
        print(f"{engine}: built in {record.get('build_seconds')} s; check {results['checks'][engine]}",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        body, content_type = multipart(test_digits(1)[0][0])
        (Path(scratch) / "body").write_bytes(body)
        script = Path(scratch) / "post.lua"
        script.write_text(lua_script(Path(scratch) / "body", content_type))
        for engine in [None, *args.engines]:
            results["serve"] += serve_rows(args.model_dir, engine, script, args.duration)
    local = {row["c"]: row["rps"] for row in results["serve"] if row["engine"] == "local"}
    print(f"\n{'engine':56} {'c':>3} {'req/s':>8} {'vs local':>8} {'cpu ms/req':>10} {'start s':>7}")
    for row in results["serve"]:
        print(f"{row['engine']:56} {row['c']:>3} {row['rps']:8.0f} {row['rps'] / local[row['c']]:8.2f} "
              f"{row['server_cpu_ms_per_req']:10.3f} {row['start_s']:7.2f}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
