"""IDX reading and writing: round trips, and one error per defect."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from modelarts_mnist import idx
from modelarts_mnist.errors import DataError, MnistSdkError


@pytest.mark.parametrize("suffix", ["", ".gz"], ids=["raw", "gzip"])
def test_images_and_labels_round_trip(tmp_path, synthetic_digits, suffix):
    images, labels = synthetic_digits
    idx.write_idx(tmp_path / f"img{suffix}", images)
    idx.write_idx(tmp_path / f"lab{suffix}", labels)
    np.testing.assert_array_equal(idx.read_images(tmp_path / f"img{suffix}"), images)
    np.testing.assert_array_equal(idx.read_labels(tmp_path / f"lab{suffix}"), labels)


def test_header_is_big_endian_with_magic_numbers(synthetic_digits):
    images, labels = synthetic_digits
    assert struct.unpack(">IIII", idx.encode(images)[:16]) == (2051, 32, 28, 28)
    assert struct.unpack(">II", idx.encode(labels)[:8]) == (2049, 32)


def test_gzip_output_is_reproducible(tmp_path, synthetic_digits):
    images, _ = synthetic_digits
    first = idx.write_idx(tmp_path / "a.gz", images).read_bytes()
    second = idx.write_idx(tmp_path / "b.gz", images).read_bytes()
    assert first == second


def test_read_split_finds_raw_or_gz(tmp_path, synthetic_digits):
    images, labels = synthetic_digits
    idx.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    got_images, got_labels = idx.read_split(tmp_path, "t10k")
    assert got_images.shape == (32, 28, 28) and list(got_labels) == list(labels)


def _defect(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_truncated_file_is_named(tmp_path, synthetic_digits):
    images, _ = synthetic_digits
    path = _defect(tmp_path, "train-images-idx3-ubyte", idx.encode(images)[:-5])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated"):
        idx.read_images(path)


def test_truncated_gzip_is_named(tmp_path, synthetic_digits):
    images, _ = synthetic_digits
    path = _defect(tmp_path, "x.gz", gzip.compress(idx.encode(images))[:200])
    with pytest.raises(DataError, match=r"x\.gz: corrupt or truncated gzip"):
        idx.read_images(path)


def test_wrong_magic_number_is_named(tmp_path, synthetic_digits):
    _, labels = synthetic_digits
    data = struct.pack(">II", 2050, len(labels)) + labels.tobytes()
    with pytest.raises(DataError, match=r"lab: wrong magic number 2050"):
        idx.read_labels(_defect(tmp_path, "lab", data))


def test_labels_file_read_as_images_is_refused(tmp_path, synthetic_digits):
    _, labels = synthetic_digits
    with pytest.raises(DataError, match="not an images file"):
        idx.read_images(_defect(tmp_path, "lab", idx.encode(labels)))


def test_mismatched_counts_name_both_files(tmp_path, synthetic_digits):
    images, labels = synthetic_digits
    idx.write_idx(tmp_path / "train-images-idx3-ubyte", images)
    idx.write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:30])
    with pytest.raises(DataError, match=r"32 images but .*train-labels-idx1-ubyte has 30 labels"):
        idx.read_split(tmp_path, "train")


def test_labels_outside_0_to_9_are_refused(tmp_path):
    labels = np.array([1, 2, 12, 3], dtype=np.uint8)
    with pytest.raises(DataError, match=r"1 labels outside 0-9 \(first at index 2: 12\)"):
        idx.read_labels(_defect(tmp_path, "lab", idx.encode(labels)))


def test_images_that_are_not_28x28_are_refused(tmp_path):
    images = np.zeros((4, 32, 32), dtype=np.uint8)
    with pytest.raises(DataError, match=r"img: images are 32x32, expected 28x28"):
        idx.read_images(_defect(tmp_path, "img", idx.encode(images)))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="neither train-images-idx3-ubyte nor"):
        idx.read_split(tmp_path, "train")


def test_data_errors_belong_to_the_sdk_tree():
    assert issubclass(DataError, MnistSdkError) and DataError.http_status == 400
