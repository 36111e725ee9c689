"""Fixtures shared across the suite; area-specific ones live in tests/fixtures/."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from modelarts_mnist import idx
from modelarts_mnist.embedded import load_embedded

# TensorFlow logs are noise in test output; keep errors only.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = [f"fixtures.{p.stem}" for p in sorted((Path(__file__).parent / "fixtures").glob("[a-z]*.py"))]

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_dataset(folder: Path, train_x, train_y, test_x, test_y, *, gz: bool = True) -> Path:
    """Write the tutorial's dataset folder (raw files, and .gz twins when gz is set)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train": (train_x, train_y), "t10k": (test_x, test_y)}
    for split, (images, labels) in arrays.items():
        for name, array in zip(idx.file_names(split), (images, labels)):
            idx.write_idx(folder / name, array)
            if gz:
                idx.write_idx(folder / f"{name}.gz", array)
    return folder


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project checkout (holds codes/, model/, config.json)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def embedded_arrays():
    """The embedded dataset as arrays: train_x, train_y, test_x, test_y."""
    return load_embedded()


@pytest.fixture(scope="session")
def embedded_dataset(tmp_path_factory, embedded_arrays) -> Path:
    """The embedded dataset (4,000 / 1,000) laid out as the tutorial's dataset-mnist folder."""
    return write_dataset(tmp_path_factory.mktemp("dataset-mnist"), *embedded_arrays)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, embedded_arrays) -> Path:
    """1,000 training and 200 test real digits (balanced), raw and .gz: for tiny training runs."""
    train_x, train_y, test_x, test_y = embedded_arrays
    folder = tmp_path_factory.mktemp("small-mnist")
    return write_dataset(folder, train_x[:1000], train_y[:1000], test_x[:200], test_y[:200])


@pytest.fixture()
def synthetic_digits():
    """32 random 28x28 uint8 images with labels 0-9 (for format tests, not training)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), (np.arange(32) % 10).astype(np.uint8)
