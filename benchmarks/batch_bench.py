"""256-image JSON batches through `serve` defaults: a baseline tree against this one, in one run.

    python benchmarks/batch_bench.py MODEL_DIR --before OLD_TREE [--after NEW_TREE] [--duration 10]
                                     [--connections 4] [--rounds 2] [--json-out FILE]

MODEL_DIR is a packaged model folder (saved_model.pb, variables/). Each tree (a checkout of this
project, e.g. `git worktree add /tmp/batch-before HEAD`) serves a copy of it holding that tree's
model/customize_service.py and config.json, as `python -m modelarts_mnist serve DIR --port 0` (the
defaults: gunicorn, one worker per core, LiteRT) with its own sources first on PYTHONPATH; both use
the usual LiteRT cache (MODELARTS_MNIST_CACHE), warmed before any figure is taken. In one run:
- parity: each tree's _preprocess on the 1,000 held-out digits embedded in the SDK (4 JSON batches
  of 250 base64 PNGs), fed to the same model in this process: the largest difference of inputs and
  of scores between the trees, and whether every label is the same;
- answers: one 256-image POST to each server; the labels each tree returns, compared;
- load: `--rounds` rounds, before then after in each (drift on a busy machine hits both), of wrk
  (one thread, keep-alive, `--connections`, `--duration` s) POSTing JSON {"images": [256 base64
  PNGs]}: images/s = requests/s x 256, and the server's CPU ms per image; the median of the rounds.
Ratios are after / before from the same run.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import (Server, batch_json, ensure_wrk, lua_script, process_cpu_seconds,  # noqa: E402
                         process_tree, run_wrk, test_digits, wait_healthy)

BATCH_SIZE = 256
PARITY_BATCH = 250  # 4 requests cover the 1,000 held-out digits
SERVICE_FILES = ("model/customize_service.py", "config.json")


def package_for(tree: Path, model_dir: Path, folder: Path) -> Path:
    """A copy of the packaged model holding tree's customize_service.py and config.json."""
    copy = folder / "model"
    shutil.copytree(model_dir, copy)
    for name in SERVICE_FILES:
        shutil.copy2(tree / name, copy / Path(name).name)
    return copy


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that runs `serve` from tree's sources."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": f"{tree}:{tree / 'modelarts_mnist' / 'runtime'}"}


def start(tree: Path, model_dir: Path) -> Server:
    """`serve` of model_dir from tree's sources, once /health answers 200."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "modelarts_mnist", "serve", str(model_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tree,
                            env=tree_env(tree), start_new_session=True)
    match = re.search(r"http://([\d.]+):(\d+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit(f"serve from {tree} did not print its URL")
    server = Server(proc, match.group(1), int(match.group(2)))
    server.start_seconds = wait_healthy(server, started)
    return server


def post_json(url: str, body: bytes) -> object:
    """POST body as JSON, the parsed answer (SystemExit unless 200)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", "/", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise SystemExit(f"POST {url} answered {response.status}: {text[:300]!r}")
    return json.loads(text)


def load_code(tree: Path, tag: str):
    """tree's customize_service.py as a module (its model_service import resolves to this process's runtime)."""
    spec = importlib.util.spec_from_file_location(f"customize_service_{tag}", tree / SERVICE_FILES[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parity(trees: dict[str, Path], model_dir: Path) -> dict:
    """Inputs, scores and labels of each tree's _preprocess on the 1,000 held-out digits, same model."""
    import numpy as np

    from modelarts_mnist.loader import load_service

    pngs, labels = test_digits(1000)
    requests = [{"images": [base64.b64encode(png).decode() for png in pngs[i:i + PARITY_BATCH]]}
                for i in range(0, len(pngs), PARITY_BATCH)]
    service = load_service(model_dir)
    inputs, scores = {}, {}
    for name, tree in trees.items():
        code = load_code(tree, name)
        inputs[name] = np.concatenate([code.MnistService._preprocess(None, data)["images"] for data in requests])
        scores[name] = np.asarray(service._inference({"images": inputs[name]})["scores"])
    before, after = (scores[name] for name in trees)
    same_labels = bool((before.argmax(1) == after.argmax(1)).all())
    return {"digits": len(pngs), "max_input_diff": float(np.abs(inputs["before"] - inputs["after"]).max()),
            "max_score_diff": float(np.abs(before - after).max()), "same_labels": same_labels,
            "accuracy": {name: float((s.argmax(1) == np.asarray(labels)).mean()) for name, s in scores.items()}}


def load_point(server: Server, script: Path, connections: int, duration: float) -> dict:
    """One wrk run of 256-image batches: images/s and the server's CPU per image."""
    pids = process_tree(server.proc.pid)
    cpu_before = process_cpu_seconds(pids)
    figures = run_wrk(server.url + "/", script, connections, duration)
    cpu = process_cpu_seconds(pids) - cpu_before
    images = figures["requests"] * BATCH_SIZE
    return {"images_per_s": round(figures["rps"] * BATCH_SIZE), "p50_ms": round(figures["p50_ms"], 1),
            "p99_ms": round(figures["p99_ms"], 1),
            "errors": figures["non2xx"] + figures["errors"] + figures["timeouts"],
            "server_cpu_ms_per_image": round(cpu * 1e3 / max(images, 1), 4)}


def run(args: argparse.Namespace) -> dict:
    """Parity, answers and load figures of both trees."""
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as folder:
        work = Path(folder)
        packages = {}
        for name, tree in trees.items():
            (work / name).mkdir()
            packages[name] = package_for(tree, args.model_dir.resolve(), work / name)
        pngs, labels = test_digits(BATCH_SIZE)
        body = work / "batch.body"
        body.write_bytes(batch_json(pngs))
        script = work / "batch.lua"
        script.write_text(lua_script(body, "application/json"))
        result = {"parity": parity(trees, packages["after"]), "answers": {}, "rounds": []}
        for name in trees:  # warms the LiteRT cache, and checks each tree answers right
            server = start(trees[name], packages[name])
            try:
                answer = post_json(server.url, body.read_bytes())
            finally:
                server.stop()
            result["answers"][name] = [int(item["predicted_label"]) for item in answer]
        result["same_answers"] = result["answers"]["before"] == result["answers"]["after"]
        result["answer_accuracy"] = sum(a == b for a, b in zip(result["answers"]["after"], labels)) / len(labels)
        for round_ in range(args.rounds):
            row = {}
            for name in trees:
                print(f"round {round_ + 1}: {name} ({trees[name]})", file=sys.stderr)
                server = start(trees[name], packages[name])
                try:
                    post_json(server.url, body.read_bytes())  # both workers are warm after wrk's first second
                    row[name] = {"start_to_healthy_s": round(server.start_seconds, 2),
                                 **load_point(server, script, args.connections, args.duration)}
                finally:
                    server.stop()
            result["rounds"].append(row)
    result["median"] = {name: {key: statistics.median(row[name][key] for row in result["rounds"])
                               for key in ("images_per_s", "server_cpu_ms_per_image")} for name in trees}
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg(),
                         "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    return result


def report(result: dict, connections: int) -> str:
    """The side-by-side table."""
    before, after = result["median"]["before"], result["median"]["after"]
    lines = ["| figure | before | after | after/before |", "|---|---|---|---|"]
    for title, key in ((f"256-image JSON batches, c={connections}: images/s (median)", "images_per_s"),
                       ("server CPU per image (ms, median)", "server_cpu_ms_per_image")):
        lines.append(f"| {title} | {before[key]:g} | {after[key]:g} | {after[key] / before[key]:.2f}x |")
    for i, row in enumerate(result["rounds"], 1):
        lines.append(f"| round {i}: images/s | {row['before']['images_per_s']} | {row['after']['images_per_s']} | "
                     f"{row['after']['images_per_s'] / row['before']['images_per_s']:.2f}x |")
    p = result["parity"]
    lines.append(f"\nparity on {p['digits']} held-out digits: max input diff {p['max_input_diff']:g}, "
                 f"max score diff {p['max_score_diff']:.2e}, same labels: {p['same_labels']}, "
                 f"accuracy {p['accuracy']}")
    lines.append(f"answers over HTTP (256 digits): same labels: {result['same_answers']}, "
                 f"accuracy {result['answer_accuracy']:.3f}; errors during load: "
                 f"{[row[name]['errors'] for row in result['rounds'] for name in row]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--before", type=Path, required=True, help="baseline source tree")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per point")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    ensure_wrk()
    result = run(args)
    print(report(result, args.connections))
    print(json.dumps({key: value for key, value in result.items() if key != "answers"}, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
