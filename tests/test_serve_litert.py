"""`serve` on LiteRT: no process imports TensorFlow, the scores are TensorFlow's, and fallbacks say why."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures.serving import multipart, request, wait_healthy
from model_service.lite_engine import plan_engine, run_converter

from modelarts_mnist.loader import load_service
from modelarts_mnist.server.loading import digit_png


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            queue.extend(int(child) for child in children)
    return found


def tensorflow_mapped(pid: int) -> bool:
    """Whether the process has TensorFlow's shared libraries loaded."""
    return "/tensorflow/" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELARTS_MNIST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def copy_package(tiny_package: Path, target: Path, prepend: str = "") -> Path:
    shutil.copytree(tiny_package, target)
    service = target / "customize_service.py"
    service.write_text(prepend + service.read_text())
    return target


def test_workers_serve_on_litert_without_tensorflow_with_its_scores(tiny_package, start_serve, cache, tmp_path):
    package = copy_package(tiny_package, tmp_path / "model")
    serve = start_serve(package, "--workers", "2", MODELARTS_MNIST_CACHE=str(cache))
    wait_healthy(serve, timeout=300)
    body, headers = multipart({"images": digit_png()})
    status, _, answer = request(serve, "POST", "/", body, headers)
    assert status == 200
    pids = process_tree(serve.proc.pid)
    assert len(pids) >= 3 and [pid for pid in pids if tensorflow_mapped(pid)] == []  # master and workers
    status, _, info = request(serve, "GET", "/ui/model.json")
    assert status == 200 and info["engine"]["serving"] == "litert" and info["engine"]["fallback_reason"] is None
    assert info["engine"]["tensorflow"] is None  # 'tensorflow' not in sys.modules in the worker that answered
    with pytest.MonkeyPatch.context() as patch:  # the same package on TensorFlow, in this process
        patch.setenv("MODELARTS_MNIST_LITE", "0")
        on_tensorflow = load_service(package)
    assert on_tensorflow.describe_engine()["serving"] == "tensorflow"
    assert answer == on_tensorflow.inference({"images": {"digit.png": digit_png()}})
    on_litert = load_service(package)  # the conversion the master cached; compared on raw scores
    assert on_litert.describe_engine()["serving"] == "litert"
    feeds = on_tensorflow._preprocess({"images": {"digit.png": digit_png()}})
    np.testing.assert_allclose(on_litert._inference(feeds)["scores"], on_tensorflow._inference(feeds)["scores"],
                               atol=1e-5)
    assert serve.stop() == 0


def test_a_second_start_reuses_the_conversion(tiny_package, start_serve, cache, tmp_path):
    package = copy_package(tiny_package, tmp_path / "model")
    seen = []
    for _ in range(2):
        serve = start_serve(package, "--threaded", MODELARTS_MNIST_CACHE=str(cache))
        wait_healthy(serve, timeout=300)
        assert request(serve, "GET", "/ui/model.json")[2]["engine"]["serving"] == "litert"
        serve.stop()
        seen.append({p.name: p.stat().st_mtime_ns for p in (cache / "lite").iterdir()})
    assert seen[0] == seen[1] and len([name for name in seen[0] if name.endswith(".tflite")]) == 1


def test_a_package_importing_tensorflow_falls_back_and_says_so(tiny_package, start_serve, cache, tmp_path):
    package = copy_package(tiny_package, tmp_path / "model", prepend="import tensorflow as tf\n")
    serve = start_serve(package, "--threaded", MODELARTS_MNIST_CACHE=str(cache))
    wait_healthy(serve, timeout=300)
    status, _, info = request(serve, "GET", "/ui/model.json")
    reason = "the package's code uses TensorFlow (customize_service.py:1 imports tensorflow)"
    assert info["engine"]["serving"] == "tensorflow" and info["engine"]["fallback_reason"] == reason
    assert info["engine"]["tensorflow"] is not None
    serve.stop()
    assert reason in serve.log.read_text()
    assert not list(cache.glob("lite/*.json"))  # no LiteRT verdict: the engine was never tried


def test_a_parity_failure_falls_back_and_says_so(tiny_package, start_serve, cache, tmp_path):
    package = copy_package(tiny_package, tmp_path / "model")

    def wrong_weights(model_dir, prefix):  # the converted model gives other scores than the signature
        run_converter(model_dir, prefix)
        with open(prefix + ".npz", "rb") as file:
            stored = dict(np.load(file))
        stored.update({k: v + 0.01 for k, v in stored.items() if k.startswith("expected_")})
        with open(prefix + ".npz", "wb") as file:
            np.savez(file, **stored)

    assert plan_engine(str(package), convert=wrong_weights).engine == "tensorflow"  # the verdict is cached
    serve = start_serve(package, "--threaded", MODELARTS_MNIST_CACHE=str(cache))
    wait_healthy(serve, timeout=300)
    body, headers = multipart({"images": digit_png()})
    assert request(serve, "POST", "/", body, headers)[0] == 200
    status, _, info = request(serve, "GET", "/ui/model.json")
    assert info["engine"]["serving"] == "tensorflow"
    assert "LiteRT's outputs differ from the signature's by 0.01" in info["engine"]["fallback_reason"]
    serve.stop()
    assert "differ from the signature's" in serve.log.read_text()


WITHOUT_LITERT = """
import json, sys
sys.modules["ai_edge_litert"] = None  # as if ai-edge-litert were not installed
from modelarts_mnist.loader import load_service
from modelarts_mnist.server.loading import digit_png
service = load_service(sys.argv[1])
print(json.dumps([service.describe_engine(), service.inference({"images": {"d.png": digit_png()}})]))
"""


def test_without_ai_edge_litert_the_package_still_serves_on_tensorflow(tiny_package, cache, tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_LITERT, str(tiny_package)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "MODELARTS_MNIST_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-2000:]
    engine, answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert engine["serving"] == "tensorflow" and "ai-edge-litert is not installed" in engine["fallback_reason"]
    assert "ai-edge-litert is not installed" in done.stderr and answer["predicted_label"] in "0123456789"
