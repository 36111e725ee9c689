"""End to end: `modelarts-mnist demo` trains, packages, serves over real HTTP and predicts."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from modelarts_mnist.demo import Layout, free_port


@pytest.mark.slow
def test_demo_runs_the_four_steps_and_stops_the_service(tmp_path):
    port = free_port(0)
    result = subprocess.run(
        [sys.executable, "-m", "modelarts_mnist", "demo", "--workdir", str(tmp_path), "--port", str(port),
         "--max_steps", "120"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    layout = Layout(tmp_path)
    model_dir = layout.models / "V0001" / "model"
    for path in (layout.dataset / "t10k-labels-idx1-ubyte.gz", layout.code / "train_mnist_tf.py",
                 model_dir / "saved_model.pb", model_dir / "customize_service.py", model_dir / "config.json"):
        assert path.is_file(), path
    right = [line for line in result.stdout.splitlines() if line.strip().endswith(" ok")]
    assert len(right) >= 8, result.stdout
    assert "I0000" not in result.stdout + result.stderr  # TensorFlow's start-up chatter stays in the logs
    with socket.socket() as probe:  # the service was stopped
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_layout_mirrors_the_tutorial_bucket(tmp_path):
    layout = Layout(tmp_path)
    assert layout.dataset.relative_to(tmp_path).as_posix() == "test-modelarts/dataset-mnist"
    assert layout.code.relative_to(tmp_path).as_posix() == "test-modelarts/train-mnist"
    assert layout.models.relative_to(tmp_path).as_posix() == "test-modelarts/mnist-model"
