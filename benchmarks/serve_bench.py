"""Serving speed in one run: HTTP floor, our service, a naive Flask baseline and batches, measured by wrk.

    python benchmarks/serve_bench.py MODEL_DIR [--duration 10] [--workers 1,2,3,4] [--memory-seconds 60]
                                     [--json-out FILE]

Starts each server itself on a free loopback port, loads it with wrk (keep-alive, one wrk thread,
`--duration` seconds per point), stops it, and prints one table and the same figures as JSON:
- floor: the same server stack answering GET /health (per configuration);
- ours: single-image multipart POST / of a real 28x28 MNIST test digit, c=1, 8, 32, with the
  default `serve` settings and with the best `--workers N` among the candidates (chosen at c=32);
- naive: benchmarks/naive_server.py (Flask dev server, tf.saved_model.load, signature per request);
- batch: JSON POST / of 256 base64 PNGs per request (images/s = requests/s * 256).
Also: seconds from `serve` start to /health 200, first request after healthy vs the 100th, and
resident memory of every serve process when healthy, before and after a `--memory-seconds` load run.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from modelarts_mnist.client import is_healthy

MARKER = "SERVE_BENCH "
BATCH_SIZE = 256
CONCURRENCY = (1, 8, 32)
HEALTH_TIMEOUT = 120.0

LUA_TEMPLATE = """\
{request}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{marker}{{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "non2xx": %d, "errors": %d, "timeouts": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write, e.timeout))
end
"""
LUA_POST = """\
local file = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "{content_type}"
"""


# ---------------------------------------------------------------- pure helpers (tested)


def lua_script(body_path: Path | None = None, content_type: str = "") -> str:
    """A wrk script: POST the file's bytes (or wrk's default GET) and report figures as one JSON line."""
    request = LUA_POST.format(body=body_path, content_type=content_type) if body_path else ""
    return LUA_TEMPLATE.format(request=request, marker=MARKER)


def parse_wrk_report(text: str) -> dict[str, float]:
    """The figures of a wrk run from its output: requests/s, p50/p99/max in ms, error counts."""
    for line in text.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER):])
            break
    else:
        raise ValueError(f"no {MARKER.strip()} line in wrk output:\n{text[-2000:]}")
    seconds = raw["duration_us"] / 1e6
    return {"requests": raw["requests"], "rps": raw["requests"] / seconds if seconds else 0.0,
            "p50_ms": raw["p50_us"] / 1e3, "p99_ms": raw["p99_us"] / 1e3, "max_ms": raw["max_us"] / 1e3,
            "non2xx": raw["non2xx"], "errors": raw["errors"], "timeouts": raw["timeouts"]}


def add_ratios(rows: list[dict]) -> list[dict]:
    """Add ours/floor (same configuration, c=32 floor) and ours/naive (same concurrency) to single-image rows."""
    floors = {row["config"]: row["rps"] for row in rows if row["kind"] == "floor"}
    naive = {row["c"]: row["rps"] for row in rows if row["kind"] == "naive"}
    for row in rows:
        if row["kind"] == "ours":
            row["vs_floor"] = ratio(row["rps"], floors.get(row["config"]))
            row["vs_naive"] = ratio(row["rps"], naive.get(row["c"]))
    return rows


def ratio(value: float, base: float | None) -> float | None:
    """value/base rounded to 3 places; None when there is no base."""
    return round(value / base, 3) if base else None


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table."""
    head = ("kind", "config", "c", "req/s", "img/s", "p50 ms", "p99 ms", "cpu ms/req", "non2xx+err",
            "/floor", "/naive")
    lines = [head]
    for row in rows:
        lines.append((row["kind"], row["config"], str(row["c"]), f"{row['rps']:.0f}",
                      f"{row['rps'] * row.get('images', 1):.0f}", f"{row['p50_ms']:.2f}",
                      f"{row['p99_ms']:.2f}", fmt_ratio(row.get("server_cpu_ms_per_req")),
                      str(row["non2xx"] + row["errors"] + row["timeouts"]),
                      fmt_ratio(row.get("vs_floor")), fmt_ratio(row.get("vs_naive"))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def pick_best(results: dict[int, float]) -> int:
    """The worker count with the highest throughput (fewer workers on a tie: less memory)."""
    return max(sorted(results), key=lambda n: results[n])


def multipart(image: bytes, name: str = "digit.png") -> tuple[bytes, str]:
    """The body and Content-Type `curl -F images=@digit.png` sends."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def batch_json(images: list[bytes]) -> bytes:
    """{"images": [base64, ...]}: the JSON form of a batch request."""
    return json.dumps({"images": [base64.b64encode(image).decode() for image in images]}).encode()


# ---------------------------------------------------------------- inputs


def test_digits(count: int) -> tuple[list[bytes], list[int]]:
    """PNGs and labels of the first `count` held-out MNIST digits embedded in the SDK."""
    from PIL import Image

    from modelarts_mnist.embedded import load_embedded

    _, _, test_x, test_y = load_embedded()
    pngs = []
    for pixels in test_x[:count]:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs, [int(y) for y in test_y[:count]]


class Inputs:
    """Files wrk and the probes send: one real test digit as multipart, 256 of them as JSON."""

    def __init__(self, folder: Path):
        self.folder = folder
        pngs, labels = test_digits(BATCH_SIZE)
        self.png, self.label = pngs[0], labels[0]
        self.body, self.content_type = multipart(self.png)
        self.single = self._script("single", self.body, self.content_type)
        self.batch = self._script("batch", batch_json(pngs), "application/json")
        self.health = folder / "health.lua"
        self.health.write_text(lua_script())

    def _script(self, name: str, body: bytes, content_type: str) -> Path:
        body_path = self.folder / f"{name}.body"
        body_path.write_bytes(body)
        script = self.folder / f"{name}.lua"
        script.write_text(lua_script(body_path, content_type))
        return script


def packaged(version: Path, workdir: Path) -> Path:
    """A copy of the trained version packaged with the repository's current inference code."""
    from modelarts_mnist.package import build_package

    copy = workdir / version.name
    shutil.copytree(version, copy)
    return build_package(copy)


# ---------------------------------------------------------------- processes


class Server:
    """A server process we started, its URL and its start-to-healthy time."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int):
        self.proc, self.host, self.port = proc, host, port
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL the process group we created if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_serve(model_dir: Path, workers: int | None, extra: tuple[str, ...] = ()) -> Server:
    """`modelarts-mnist serve MODEL_DIR --port 0 [--workers N] [extra]`, timed until /health answers 200."""
    args = [sys.executable, "-m", "modelarts_mnist", "serve", str(model_dir), "--port", "0", *extra]
    args += ["--workers", str(workers)] if workers else []
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    match = re.search(r"http://([\d.]+):(\d+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("serve did not print its URL")
    server = Server(proc, match.group(1), int(match.group(2)))
    server.start_seconds = wait_healthy(server, started)
    return server


def start_naive(model_dir: Path) -> Server:
    """benchmarks/naive_server.py on a free port, timed until /health answers 200."""
    port = free_port()
    script = Path(__file__).with_name("naive_server.py")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), str(model_dir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = Server(proc, "127.0.0.1", port)
    server.start_seconds = wait_healthy(server, started)
    return server


def tree_environ(tree: Path) -> dict[str, str]:
    """The environment variables that make `python -m modelarts_mnist` (and model_service) run from `tree`'s sources."""
    return {"PYTHONPATH": f"{tree}:{tree / 'modelarts_mnist' / 'runtime'}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(server: Server, started: float) -> float:
    """Seconds from `started` until GET /health answers 200 (polled every 10 ms)."""
    while time.monotonic() - started < HEALTH_TIMEOUT:
        if server.proc.poll() is not None:
            raise SystemExit(f"server exited with {server.proc.returncode} before it was healthy")
        if is_healthy(f"http://{server.host}:{server.port}"):
            return time.monotonic() - started
        time.sleep(0.01)
    server.stop()
    raise SystemExit(f"server not healthy within {HEALTH_TIMEOUT:.0f} s")


def process_tree(pid: int) -> list[int]:
    """pid (while it lives), then its live descendants and the rest of its process group (from /proc).

    The group too: servers start in a session of their own, and some launchers (TorchServe's) exit
    and leave their servers behind; descendants too, for workers that start sessions of their own.
    """
    children: dict[int, list[int]] = {}
    group, live = [], set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":  # exited, waiting to be reaped: nothing left to measure
            continue
        child = int(stat.parent.name)
        live.add(child)
        children.setdefault(int(fields[1]), []).append(child)
        if int(fields[2]) == pid and child != pid:
            group.append(child)
    tree, todo, seen = [], [pid, *group], set()
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.add(current)
        if current in live:
            tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MiB (VmRSS), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def cpu_seconds(server: Server) -> float:
    """User+system CPU time used so far by the server and its workers."""
    return process_cpu_seconds(process_tree(server.proc.pid))


def process_cpu_seconds(pids: list[int]) -> float:
    """User+system CPU time used so far by the processes (from /proc/PID/stat; 0 for those gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def memory(server: Server) -> dict[str, float]:
    """{pid: RSS MiB} of the server and its workers."""
    return {str(pid): round(rss_mb(pid), 1) for pid in process_tree(server.proc.pid)}


# ---------------------------------------------------------------- measurements


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package first when it is missing."""
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk could not be installed")


def run_wrk(url: str, script: Path, connections: int, duration: float) -> dict[str, float]:
    """One wrk run (one thread, keep-alive) and its parsed figures."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(script), url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    return parse_wrk_report(done.stdout)


def point(kind: str, config: str, server: Server, script: Path, c: int, duration: float,
          images: int = 1) -> dict:
    """One row of the table: a wrk run against `server` at concurrency c."""
    path = "/health" if kind == "floor" else "/"
    cpu_before = cpu_seconds(server)
    row = {"kind": kind, "config": config, "c": c, "images": images,
           **run_wrk(server.url + path, script, c, duration)}
    row["server_cpu_ms_per_req"] = round((cpu_seconds(server) - cpu_before) * 1e3 / max(row["requests"], 1), 3)
    print(f"  {kind:6} {config:10} c={c:<3} {row['rps']:8.0f} req/s  p50 {row['p50_ms']:.2f} ms  "
          f"p99 {row['p99_ms']:.2f} ms  cpu {row['server_cpu_ms_per_req']:.3f} ms/req", file=sys.stderr)
    return row


def post_latencies(server: Server, inputs: Inputs, n: int) -> list[float]:
    """Latencies (ms) of n sequential single-image POSTs, each on a new connection; checks the answers.

    A new connection each time, so the first request and the hundredth pay the same connect cost.
    """
    latencies = []
    for _ in range(n):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        started = time.perf_counter()
        conn.request("POST", "/", body=inputs.body, headers={"Content-Type": inputs.content_type})
        response = conn.getresponse()
        answer = response.read()
        latencies.append((time.perf_counter() - started) * 1e3)
        conn.close()
        if response.status != 200 or json.loads(answer).get("predicted_label") != str(inputs.label):
            raise SystemExit(f"POST / answered {response.status}: {answer[:300]!r}")
    return latencies


def warm_figures(server: Server, inputs: Inputs) -> dict[str, float]:
    """First request right after /health turned 200 vs the 100th (and the median of 2..100)."""
    latencies = post_latencies(server, inputs, 100)
    return {"first_ms": round(latencies[0], 2), "hundredth_ms": round(latencies[99], 2),
            "median_2_100_ms": round(statistics.median(latencies[1:]), 2)}


# ---------------------------------------------------------------- the run


def measure_config(model_dir: Path, inputs: Inputs, workers: int | None, args: argparse.Namespace,
                   *, full: bool, memory_run: bool = False) -> tuple[list[dict], dict]:
    """Floor and single-image points (c=32 only unless full; then also batch) for one serve setting."""
    config = f"workers={workers}" if workers else "default"
    server = start_serve(model_dir, workers)
    info: dict = {"config": config, "start_to_healthy_s": round(server.start_seconds, 2)}
    try:
        info.update(warm_figures(server, inputs))
        info["rss_mb_healthy"] = memory(server)
        rows = [point("floor", config, server, inputs.health, 32, args.duration)]
        for c in CONCURRENCY if full else (32,):
            rows.append(point("ours", config, server, inputs.single, c, args.duration))
        if full:
            rows.append(point("batch", config, server, inputs.batch, 4, args.duration, BATCH_SIZE))
        if memory_run and args.memory_seconds:
            info["rss_mb_before_load"] = memory(server)
            info["memory_load"] = point("ours", config, server, inputs.single, 32, args.memory_seconds)
            info["rss_mb_after_load"] = memory(server)
    finally:
        server.stop()
    return rows, info


def measure_naive(model_dir: Path, inputs: Inputs, duration: float) -> tuple[list[dict], dict]:
    """The naive baseline's single-image points."""
    server = start_naive(model_dir)
    try:
        info = {"config": "naive", "start_to_healthy_s": round(server.start_seconds, 2),
                **warm_figures(server, inputs)}
        rows = [point("naive", "naive", server, inputs.single, c, duration) for c in CONCURRENCY]
    finally:
        server.stop()
    return rows, info


def run_bench(args: argparse.Namespace) -> dict:
    """Every measurement of one benchmark run."""
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as folder:
        inputs = Inputs(Path(folder))
        rows, default_info = measure_config(args.model_dir, inputs, None, args, full=True, memory_run=True)
        infos, candidates = [default_info], {}
        for n in args.workers:
            more, info = measure_config(args.model_dir, inputs, n, args, full=False)
            candidates[n] = more[-1]["rps"]
            rows += more
            infos.append(info)
        best = pick_best(candidates)
        more, info = measure_config(args.model_dir, inputs, best, args, full=True)
        rows += [{**row, "config": f"best:{row['config']}"} for row in more]
        naive_rows, naive_info = measure_naive(args.model_dir, inputs, args.duration)
    rows = add_ratios(rows + naive_rows)
    return {"machine": machine(), "duration_s": args.duration, "best_workers": best, "rows": rows,
            "servers": infos + [{**info, "config": f"best:{info['config']}"}, naive_info]}


def machine() -> dict:
    """Cores and load when the run ended (other work on the machine skews figures)."""
    return {"cpus": os.cpu_count(), "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk point")
    parser.add_argument("--workers", type=lambda s: [int(n) for n in s.split(",")], default=[1, 2, 3, 4],
                        help="worker counts to try (comma-separated)")
    parser.add_argument("--memory-seconds", type=float, default=60.0, help="length of the memory load run")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ensure_wrk()
    result = run_bench(args)
    print(format_table(result["rows"]))
    for info in result["servers"]:
        print(json.dumps(info))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
