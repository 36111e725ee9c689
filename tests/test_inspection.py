"""Inspecting a dataset folder: counts, histograms, canonical match, defects, contact sheet."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

from conftest import write_dataset
from modelarts_mnist import idx
from modelarts_mnist.dataset import Canonical
from modelarts_mnist.errors import DataError
from modelarts_mnist.inspection import (
    GAP,
    LABEL_WIDTH,
    SHEET_SCALE,
    contact_sheet,
    format_report,
    inspect_dataset,
    write_contact_sheet,
)


def test_embedded_counts_and_histograms(embedded_dataset):
    report = inspect_dataset(embedded_dataset)
    assert {s: r.count for s, r in report.splits.items()} == {"train": 4000, "t10k": 1000}
    assert report.splits["train"].histogram == [400] * 10
    assert report.splits["t10k"].histogram == [100] * 10
    assert not report.canonical and "60,000 / 10,000" in report.canonical_reason
    assert report.notes == []


def test_histogram_counts_each_digit(tmp_path, synthetic_digits):
    images, _ = synthetic_digits
    labels = np.array([3] * 20 + [7] * 12, dtype=np.uint8)
    folder = write_dataset(tmp_path / "d", images, labels, images[:5], labels[:5])
    report = inspect_dataset(folder)
    assert report.splits["train"].histogram == [0, 0, 0, 20, 0, 0, 0, 12, 0, 0]
    assert report.splits["t10k"].histogram == [0, 0, 0, 5, 0, 0, 0, 0, 0, 0]


def test_missing_twins_are_noted(tmp_path, synthetic_digits):
    folder = write_dataset(tmp_path / "d", *synthetic_digits, *synthetic_digits)
    (folder / "train-images-idx3-ubyte").unlink()
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    report = inspect_dataset(folder)
    assert report.notes == [
        "train-images-idx3-ubyte is missing (the tutorial folder holds raw and .gz)",
        "t10k-labels-idx1-ubyte.gz is missing (the tutorial folder holds raw and .gz)",
    ]
    assert report.splits["train"].files == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte",
                                            "train-labels-idx1-ubyte.gz"]


def copy_with_table(source, tmp_path):
    """A copy of `source` and a verifier table naming its own sizes and digests as canonical."""
    folder = shutil.copytree(source, tmp_path / "copy")
    counts = {"train": 4000, "t10k": 1000}
    digests = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in idx.all_file_names()}
    return folder, Canonical(counts, digests)


def test_canonical_match_and_mismatch(embedded_dataset, tmp_path):
    folder, table = copy_with_table(embedded_dataset, tmp_path)
    report = inspect_dataset(folder, canonical=table)
    assert report.canonical and "matches" in report.canonical_reason
    table.sha256["train-labels-idx1-ubyte"] = "f" * 64
    report = inspect_dataset(folder, canonical=table)
    assert not report.canonical and report.canonical_reason.startswith("train-labels-idx1-ubyte: SHA-256")


def test_format_report_lists_counts_histogram_and_verdict(embedded_dataset):
    text = format_report(inspect_dataset(embedded_dataset))
    assert "train    4,000 images" in text
    assert "t10k       100    100" in text
    assert "canonical MNIST: no" in text


def corrupt_truncate(folder):
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    return path, "truncated"


def corrupt_magic(folder):
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", 2050) + path.read_bytes()[4:])
    return path, "wrong magic number 2050"


def corrupt_label(folder):
    path = folder / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[10] = 10
    path.write_bytes(bytes(data))
    return path, "labels outside 0-9"


def corrupt_count(folder):
    path = folder / "train-labels-idx1-ubyte"
    labels = idx.read_labels(path)[:-1]
    idx.write_idx(path, labels)
    idx.write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    return path, "has 31 labels"


def corrupt_gz(folder):
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    return path, "truncated gzip"


def corrupt_twin(folder):
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx.encode(np.zeros((32, 28, 28), np.uint8))))
    return path, "content differs"


def corrupt_missing(folder):
    for suffix in ("", ".gz"):
        (folder / f"t10k-labels-idx1-ubyte{suffix}").unlink()
    return folder, "neither t10k-labels-idx1-ubyte nor t10k-labels-idx1-ubyte.gz found"


def corrupt_side(folder):
    path = folder / "train-images-idx3-ubyte"
    idx.write_idx(path, np.zeros((32, 14, 56), np.uint8))
    return path, "14x56, expected 28x28"


DEFECTS = [corrupt_truncate, corrupt_magic, corrupt_label, corrupt_count, corrupt_gz, corrupt_twin,
           corrupt_missing, corrupt_side]


@pytest.mark.parametrize("corrupt", DEFECTS, ids=[f.__name__[8:] for f in DEFECTS])
def test_a_defective_file_is_named_with_its_problem(tmp_path, synthetic_digits, corrupt):
    images, labels = synthetic_digits
    folder = write_dataset(tmp_path / "d", images, labels, images, labels)
    path, problem = corrupt(folder)
    with pytest.raises(DataError) as caught:
        inspect_dataset(folder)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="nowhere: not a folder"):
        inspect_dataset(tmp_path / "nowhere")


def test_contact_sheet_has_a_labelled_row_per_digit(tmp_path, embedded_arrays):
    train_x, train_y = embedded_arrays[:2]
    path = write_contact_sheet(train_x, train_y, tmp_path / "sheet.png", per_class=6)
    sheet = np.asarray(Image.open(path))
    tile = 28 * SHEET_SCALE
    assert sheet.shape == (10 * (tile + GAP) + GAP, LABEL_WIDTH + 6 * (tile + GAP) + GAP)
    for digit in range(10):
        top = GAP + digit * (tile + GAP)
        assert sheet[top:top + tile, :LABEL_WIDTH].min() < 128, f"row {digit} has no label"
        for column in (0, 5):
            left = LABEL_WIDTH + GAP + column * (tile + GAP)
            expected = np.kron(train_x[np.flatnonzero(train_y == digit)[column]], np.ones((2, 2), np.uint8))
            np.testing.assert_array_equal(sheet[top:top + tile, left:left + tile], expected)


def test_contact_sheet_of_a_folder_has_a_title(tmp_path, embedded_dataset):
    path = contact_sheet(embedded_dataset, tmp_path / "out" / "sheet.png", split="t10k", per_class=3)
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        header = np.asarray(picture)[:30]
    assert header.min() < 128  # the title's ink
