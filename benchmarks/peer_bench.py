"""Our service beside peer model servers on the same work, in one run, measured the same way.

    python benchmarks/peer_bench.py MODEL_DIR [--peers fastapi,torchserve,litserve,bentoml]
                                    [--duration 8] [--json-out FILE] [--before OLD_CHECKOUT]

The work: one 28x28 PNG (a real MNIST test digit) POSTed as multipart field `images`, the same
model, the label and top-5 scores back as JSON. Peers run our SavedModel converted to TFLite on
LiteRT (`peers/digit_model.py`), so what differs is the server. Each peer lives in its own virtual
environment with pinned versions, built here once under ~/.cache/modelarts-mnist/peers (a stamp
written last marks it complete; an unstamped one is rebuilt). Every server is started on a free
loopback port, loaded with wrk (one thread, keep-alive, `--duration` seconds per point) at c=1, 8
and 32, and stopped before the next one starts. Figures per server: requests/s per concurrency,
server CPU time per request (all its processes, from /proc), resident memory of all its processes
once warm, and cold start (spawn to the first answered POST).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import (CONCURRENCY, Server, cpu_seconds, ensure_wrk, free_port, lua_script,  # noqa: E402
                         memory, multipart, process_tree, run_wrk, test_digits, tree_environ)

PEERS_DIR = Path(__file__).parent / "peers"
CACHE = Path(os.environ.get("MODELARTS_MNIST_PEERS", Path.home() / ".cache" / "modelarts-mnist" / "peers"))
STAMP = "peer-env.json"
START_TIMEOUT = 180.0
LITERT = "ai-edge-litert==2.3.0"
BASE = ("numpy==2.3.5", "pillow==12.0.0", LITERT)


@dataclass(frozen=True)
class Peer:
    """A peer server: its pinned environment, how it starts, and where it answers."""

    name: str
    settings: str
    pins: tuple[str, ...]
    path: str
    command: Callable[[Path, Path, int], list[str]]  # (python, workdir, port) -> argv
    prepare: Callable[[Path, Path, int], None] = lambda python, workdir, port: None
    env: dict = field(default_factory=dict)
    request: str = "multipart"  # or "v2": the V2 inference protocol's JSON, the PNG as base64 BYTES


def fastapi_command(python: Path, workdir: Path, port: int) -> list[str]:
    return [str(python), "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(PEERS_DIR), "--port", str(port),
            "--workers", "2", "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]


def litserve_command(python: Path, workdir: Path, port: int) -> list[str]:
    return [str(python), str(PEERS_DIR / "litserve_app.py"), str(port)]


def bentoml_command(python: Path, workdir: Path, port: int) -> list[str]:
    return [str(python), "-m", "bentoml", "serve", "bentoml_service:Digit", "--working-dir", str(PEERS_DIR),
            "--port", str(port), "--host", "127.0.0.1"]


def mlserver_prepare(python: Path, workdir: Path, port: int) -> None:
    """A model repository of one model (the custom runtime) and server settings with 2 workers."""
    home = workdir / "mlserver"
    (home / "digit").mkdir(parents=True, exist_ok=True)
    (home / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 2, "debug": False}))
    (home / "digit" / "model-settings.json").write_text(json.dumps({
        "name": "digit", "implementation": "mlserver_runtime.DigitRuntime"}))


def mlserver_command(python: Path, workdir: Path, port: int) -> list[str]:
    return [str(python), "-c", "import sys; from mlserver.cli.main import main; sys.argv[0] = 'mlserver'; main()",
            "start", str(workdir / "mlserver")]


def ray_command(python: Path, workdir: Path, port: int) -> list[str]:
    return [str(python), str(PEERS_DIR / "ray_app.py"), str(port)]


def torchserve_prepare(python: Path, workdir: Path, port: int) -> None:
    """A model archive of the handler, digit_model.py and model.tflite, and a config with batching."""
    store = workdir / "store"
    store.mkdir(exist_ok=True)
    if not (store / "digit.mar").exists():
        subprocess.run([str(python), "-c", "import sys; from model_archiver.model_packaging import "
                        "generate_model_archive as g; sys.argv[0] = 'torch-model-archiver'; g()",
                        "--model-name", "digit", "--version", "1.0",
                        "--handler", str(PEERS_DIR / "torchserve_handler.py"),
                        "--extra-files", f"{PEERS_DIR / 'digit_model.py'},{workdir / 'model.tflite'}",
                        "--export-path", str(store)], check=True)
    models = {"digit": {"1.0": {"defaultVersion": True, "marName": "digit.mar", "minWorkers": 2, "maxWorkers": 2,
                                "batchSize": 16, "maxBatchDelay": 2, "responseTimeout": 120}}}
    (workdir / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{port}\n"
        f"management_address=http://127.0.0.1:{free_port()}\n"
        f"metrics_address=http://127.0.0.1:{free_port()}\n"
        f"model_store={store}\nload_models=digit.mar\nmodels={json.dumps(models)}\n"
        "disable_token_authorization=true\ninstall_py_dep_per_model=false\ndisable_system_metrics=true\n"
        "default_workers_per_model=2\n")


def torchserve_command(python: Path, workdir: Path, port: int) -> list[str]:
    return [str(python), "-c", "import sys; from ts.model_server import start; sys.argv[0] = 'torchserve'; start()",
            "--start", "--foreground", "--ncs", "--disable-token-auth", "--model-store", str(workdir / "store"),
            "--ts-config", str(workdir / "config.properties")]


PEERS = {
    peer.name: peer for peer in (
        Peer("fastapi", "FastAPI 0.165 on uvicorn 0.55 (httptools, uvloop), 2 workers, async endpoint",
             ("fastapi==0.165.0", "uvicorn[standard]==0.55.0", "python-multipart==0.0.34", *BASE),
             "/", fastapi_command),
        Peer("torchserve", "TorchServe 0.12, 2 workers, batch 16 / 2 ms",
             ("torchserve==0.12.0", "torch-model-archiver==0.12.0", "torch==2.13.0", "pyyaml==6.0.4", *BASE),
             "/predictions/digit", torchserve_command, torchserve_prepare),
        Peer("litserve", "LitServe 0.2.19, 2 workers per CPU device",
             ("litserve==0.2.19", "python-multipart==0.0.34", *BASE), "/predict", litserve_command),
        Peer("bentoml", "BentoML 1.4.40, 2 workers", ("bentoml==1.4.40", *BASE), "/predict", bentoml_command),
        # uvloop 0.22 made get_event_loop() raise outside a loop, which MLServer 1.7 still calls at start.
        Peer("mlserver", "MLServer 1.7.1, 2 parallel workers, V2 inference JSON",
             ("mlserver==1.7.1", "uvloop==0.21.0", *BASE),
             "/v2/models/digit/infer", mlserver_command, mlserver_prepare, request="v2"),
        Peer("ray", "Ray Serve 2.60 with a FastAPI ingress, 2 replicas",
             ("ray[serve]==2.60.0", "python-multipart==0.0.34", *BASE), "/", ray_command),
    )
}


# ---------------------------------------------------------------- environments


def peer_python(peer: Peer) -> Path:
    """The interpreter of the peer's environment, built first if it is missing or unstamped."""
    digest = hashlib.sha256("\n".join(peer.pins).encode()).hexdigest()[:10]
    home = CACHE / f"{peer.name}-{digest}"
    python = home / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{peer.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benchmark runs never build the same environment at once
        if (home / STAMP).is_file():
            return python
        shutil.rmtree(home, ignore_errors=True)  # an unstamped one was cut short: start again
        print(f"building {peer.name}'s environment in {home} ...", file=sys.stderr)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--prefer-binary", *peer.pins], check=True)
        (home / STAMP).write_text(json.dumps({"pins": peer.pins, "seconds": round(time.monotonic() - started)}))
    return python


def convert(model_dir: Path, out: Path) -> Path:
    """model.tflite from the package's SavedModel (its one signature), converted by this Python's TensorFlow."""
    target = out / "model.tflite"
    if not target.exists():
        code = ("import sys, tensorflow as tf; c = tf.lite.TFLiteConverter.from_saved_model(sys.argv[1], "
                "signature_keys=[list(tf.saved_model.load(sys.argv[1]).signatures)[0]]); "
                "open(sys.argv[2], 'wb').write(c.convert())")
        subprocess.run([sys.executable, "-c", code, str(model_dir), str(target)], check=True,
                       stderr=subprocess.DEVNULL)
    return target


# ---------------------------------------------------------------- runs


def post_ok(url: str, body: bytes, content_type: str) -> bool:
    """True when a POST of body answers 200 with a JSON label."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status == 200 and "predicted_label" in response.read().decode()
    except OSError:
        return False


class Group(Server):
    """A server all of whose processes are stopped: some peers' launchers exit and leave their servers."""

    def stop(self) -> None:
        for signum, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            for pid in process_tree(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()  # reaps the launcher, so it no longer counts
                if not process_tree(self.proc.pid):
                    return
                time.sleep(0.1)


def start(argv: list[str], url: str, body: bytes, content_type: str, env: dict, cwd: Path) -> Server:
    """Spawn the server and wait for its first answered POST (the cold start)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                            env={**os.environ, **env}, start_new_session=True)
    server = Group(proc, "127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))
    while time.monotonic() - started < START_TIMEOUT:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[:4]} exited with {proc.returncode} before answering")
        if post_ok(url, body, content_type):
            server.start_seconds = time.monotonic() - started
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{argv[:4]} did not answer within {START_TIMEOUT:.0f} s")


def measure(name: str, settings: str, server: Server, url: str, script: Path, duration: float) -> dict:
    """One row: req/s at each concurrency, CPU per request, memory once warm, cold start."""
    row = {"server": name, "settings": settings, "cold_start_s": round(server.start_seconds, 2)}
    requests = cpu = 0.0
    for c in CONCURRENCY:
        before = cpu_seconds(server)
        figures = run_wrk(url, script, c, duration)
        spent = cpu_seconds(server) - before
        row[f"c{c}"] = round(figures["rps"])
        row[f"c{c}_cpu_ms"] = round(spent * 1e3 / max(figures["requests"], 1), 3)
        row[f"c{c}_failed"] = figures["non2xx"] + figures["errors"] + figures["timeouts"]
        requests, cpu = requests + figures["requests"], cpu + spent
        print(f"  {name:10} c={c:<3} {figures['rps']:7.0f} req/s  cpu {row[f'c{c}_cpu_ms']:.3f} ms/req",
              file=sys.stderr)
    row["cpu_ms_per_req"] = round(cpu * 1e3 / max(requests, 1), 3)
    rss = memory(server)
    row["rss_mb"], row["processes"] = round(sum(rss.values())), len(rss)
    return row


class Bodies:
    """The request bodies (and their wrk scripts) of each request kind, for the same digit."""

    def __init__(self, png: bytes, folder: Path):
        v2 = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
                          "data": [base64.b64encode(png).decode()]}]}
        self.kinds = {"multipart": multipart(png), "v2": (json.dumps(v2).encode(), "application/json")}
        self.scripts = {}
        for kind, (body, content_type) in self.kinds.items():
            (folder / f"{kind}.body").write_bytes(body)
            self.scripts[kind] = folder / f"{kind}.lua"
            self.scripts[kind].write_text(lua_script(folder / f"{kind}.body", content_type))


def run_peer(peer: Peer, workdir: Path, bodies: Bodies, duration: float) -> dict:
    body, content_type = bodies.kinds[peer.request]
    script = bodies.scripts[peer.request]
    python = peer_python(peer)
    port = free_port()
    peer.prepare(python, workdir, port)
    url = f"http://127.0.0.1:{port}{peer.path}"
    server = start(peer.command(python, workdir, port), url, body, content_type,
                   {"PEER_MODEL": str(workdir / "model.tflite"), "PYTHONPATH": str(PEERS_DIR), **peer.env}, workdir)
    try:
        return measure(peer.name, peer.settings, server, url, script, duration)
    finally:
        server.stop()


def run_ours(model_dir: Path, bodies: Bodies, duration: float, tree: Path | None = None) -> dict:
    """Our `serve` with its defaults: this checkout's, or (tree) another checkout's sources."""
    body, content_type = bodies.kinds["multipart"]
    script = bodies.scripts["multipart"]
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start([sys.executable, "-m", "modelarts_mnist", "serve", str(model_dir), "--port", str(port)],
                   url, body, content_type, tree_environ(tree) if tree else {}, tree or Path.cwd())
    name, settings = ("ours, before", f"`serve` defaults from {tree}") if tree else \
        ("ours", "`modelarts-mnist serve` defaults")
    try:
        return measure(name, settings, server, url, script, duration)
    finally:
        server.stop()


def with_inference_code(model_dir: Path, checkout: Path, workdir: Path) -> Path:
    """A copy of model_dir whose customize_service.py is the checkout's model/customize_service.py (if it has one)."""
    code = checkout / "model" / "customize_service.py"
    if not code.is_file():
        return model_dir
    copy = workdir / "model-before"
    shutil.copytree(model_dir, copy)
    shutil.copy(code, copy / "customize_service.py")
    return copy


def format_table(rows: list[dict]) -> str:
    head = ("server", "c=1", "c=8", "c=32", "cpu ms/req", "RSS MB (procs)", "cold s", "failed")
    lines = [head] + [(row["server"], str(row["c1"]), str(row["c8"]), str(row["c32"]), f"{row['cpu_ms_per_req']:.3f}",
                       f"{row['rss_mb']} ({row['processes']})", f"{row['cold_start_s']:.1f}",
                       str(sum(row[f"c{c}_failed"] for c in CONCURRENCY))) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from: " + ", ".join(PEERS))
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--before", type=Path, help="also run `serve` and customize_service.py from this checkout "
                                                    "(a row 'ours, before')")
    args = parser.parse_args(argv)
    chosen = [PEERS[name] for name in args.peers.split(",") if name]
    ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        workdir = Path(tmp)
        convert(args.model_dir, workdir)
        bodies = Bodies(test_digits(1)[0][0], workdir)
        for peer in chosen:
            peer_python(peer)  # build before measuring anything: a build must not overlap a measurement
        rows = [run_ours(args.model_dir, bodies, args.duration)]
        if args.before:
            rows.append(run_ours(with_inference_code(args.model_dir, args.before, workdir), bodies, args.duration,
                                 args.before))
        for peer in chosen:
            try:
                rows.append(run_peer(peer, workdir, bodies, args.duration))
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"{peer.name}: {exc}", file=sys.stderr)
                rows.append({"server": peer.name, "settings": peer.settings, "error": str(exc)})
    measured = [row for row in rows if "error" not in row]
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
              "duration_s": args.duration, "rows": rows}
    print(format_table(measured))
    for row in rows:
        print(f"{row['server']}: {row['settings']}" + (f"  FAILED: {row['error']}" if "error" in row else ""))
    print(json.dumps(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
