"""The tutorial's four steps in one go, in a work folder laid out like its OBS bucket."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from . import idx
from .artifacts import BOOT_FILE, artifact_path
from .client import post_image, wait_healthy
from .dataset import prepare_dataset
from .errors import DataError, PackageError
from .files import write_atomic
from .jobs import run_job
from .package import build_package, check_package

logger = logging.getLogger(__name__)

BUCKET = "test-modelarts"
STARTUP_TIMEOUT = 120  # seconds for `serve` to load TensorFlow and the model
# TensorFlow's C++ start-up chatter (oneDNN, CUDA probes) cannot be silenced by environment
# variables in TF 2.21; the demo shows the job's own progress lines only (train.log keeps all).
TF_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages|To enable the following|INFO:tensorflow:)")


@dataclass(frozen=True)
class Layout:
    """Where each step of the demo reads and writes, mirroring the tutorial's bucket."""

    workdir: Path

    @property
    def bucket(self) -> Path:
        return self.workdir / BUCKET

    @property
    def dataset(self) -> Path:
        return self.bucket / "dataset-mnist"

    @property
    def code(self) -> Path:
        return self.bucket / "train-mnist"

    @property
    def models(self) -> Path:
        return self.bucket / "mnist-model"

    @property
    def samples(self) -> Path:
        return self.workdir / "samples"


@dataclass
class Prediction:
    """One held-out digit sent to the service and what it answered."""

    path: Path
    expected: str
    answer: dict

    @property
    def label(self) -> str:
        return str(self.answer.get("predicted_label"))


def prepare_data(layout: Layout) -> Path:
    """Step 1: the embedded dataset in dataset-mnist/ (an intact existing copy is reused)."""
    try:
        for split in idx.SPLITS:
            idx.read_split(layout.dataset, split)
        return layout.dataset
    except DataError:
        return prepare_dataset(layout.dataset, "embedded", force=layout.dataset.exists())


def stage_code(layout: Layout) -> Path:
    """Step 2a: the boot file in train-mnist/, as uploaded to OBS in the tutorial."""
    layout.code.mkdir(parents=True, exist_ok=True)
    target = layout.code / Path(BOOT_FILE).name
    write_atomic(target, artifact_path(BOOT_FILE).read_bytes())  # a full disk leaves no half boot file
    return target


def train(layout: Layout, boot_file: Path, extra_args: Sequence[str], echo: Callable[[str], None]) -> Path:
    """Step 2b: one training job; returns the new version folder (V0001 on a fresh work folder)."""
    return run_job(layout.dataset, layout.models, extra_args, boot_file=boot_file, echo=echo)


def package(version_dir: Path) -> Path:
    """Step 3a: inference code and config.json into <version>/model, checked like an import."""
    model_dir = build_package(version_dir)
    problems = check_package(model_dir, smoke=False)
    if problems:
        raise PackageError("the packaged model fails the checks:\n" + "\n".join(map(str, problems)))
    return model_dir


def write_samples(layout: Layout, per_digit: int = 1) -> list[tuple[Path, str]]:
    """Held-out test digits as 28x28 PNG files, `per_digit` of each class."""
    images, labels = idx.read_split(layout.dataset, "t10k")
    layout.samples.mkdir(parents=True, exist_ok=True)
    samples = []
    for digit in range(10):
        for n, row in enumerate(np.flatnonzero(labels == digit)[:per_digit]):
            path = layout.samples / f"test-{digit}-{n}.png"
            Image.fromarray(images[row]).save(path)
            samples.append((path, str(digit)))
    return samples


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free (0 or taken: a free port the system picks)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, preferred))
        except OSError:
            probe.bind((host, 0))
        return probe.getsockname()[1]


def start_service(model_dir: Path, host: str, port: int, log_path: Path) -> subprocess.Popen:
    """Step 3b: `modelarts-mnist serve` in its own process, its log in the work folder."""
    command = [sys.executable, "-m", "modelarts_mnist", "serve", str(model_dir), "--host", host,
               "--port", str(port)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def stop_service(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (running requests finish), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def predict_samples(url: str, samples: list[tuple[Path, str]]) -> list[Prediction]:
    """Step 4: POST each sample to the service as multipart field `images`."""
    return [Prediction(path, expected, post_image(url, path)) for path, expected in samples]


def wait_until_ready(url: str, process: subprocess.Popen) -> float:
    """Seconds until /health answers 200."""
    start = time.monotonic()
    wait_healthy(url, STARTUP_TIMEOUT, alive=lambda: process.poll() is None)
    return time.monotonic() - start


def run_demo(workdir: Path, *, host: str = "127.0.0.1", port: int = 8080, train_args: Sequence[str] = (),
             keep_serving: bool = False, say: Callable[[str], None] = logger.info) -> list[Prediction]:
    """Run the four steps; the service is stopped at the end unless keep_serving is set."""
    layout = Layout(Path(workdir).resolve())
    started = time.monotonic()
    say(f"Step 1/4  data: {prepare_data(layout)}")
    boot_file = stage_code(layout)
    say(f"Step 2/4  training job: {boot_file} on {layout.dataset}")
    version_dir = train(layout, boot_file, train_args, echo=lambda line: show_job_line(line, say))
    say(f"          version {version_dir.name} written to {version_dir}")
    with native_stderr_to(layout.workdir / "package.log"):  # TF's import chatter, see TF_NOISE
        model_dir = package(version_dir)
    say(f"Step 3/4  model package checked: {model_dir}")
    port = free_port(port, host)
    url = f"http://{host}:{port}"
    process = start_service(model_dir, host, port, layout.workdir / "serve.log")
    try:
        say(f"          online service up at {url} after {wait_until_ready(url, process):.1f} s")
        predictions = predict_samples(url, write_samples(layout))
        say("Step 4/4  predictions of held-out digits over HTTP:")
        for p in predictions:
            mark = "ok" if p.label == p.expected else f"WRONG (expected {p.expected})"
            say(f"          {p.path.name}: {p.label}  {mark}")
        right = sum(p.label == p.expected for p in predictions)
        say(f"          {right}/{len(predictions)} right; whole demo {time.monotonic() - started:.0f} s")
        say(f"Try it:   open {url}/ui/  or  curl -F 'images=@{predictions[0].path}' {url}/")
        if keep_serving:
            say("Serving until Ctrl+C ...")
            wait_for_interrupt(process)
    finally:
        stop_service(process)
        say("Service stopped.")
    return predictions


@contextlib.contextmanager
def native_stderr_to(path: Path):
    """Send file descriptor 2 (where TensorFlow's C++ logs go) to `path` for the block."""
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def show_job_line(line: str, say: Callable[[str], None]) -> None:
    """Pass a training-log line on, unless it is TensorFlow's start-up noise."""
    if line.strip() and not TF_NOISE.match(line):
        say(f"          {line.rstrip()}")


def wait_for_interrupt(process: subprocess.Popen) -> None:
    """Block until Ctrl+C or until the service exits by itself."""
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
