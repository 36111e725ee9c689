"""Read and write MNIST IDX files, raw or gzip-compressed (numpy only, no TensorFlow)."""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

LABELS_MAGIC = 2049  # 0x00000801: uint8, one dimension
IMAGES_MAGIC = 2051  # 0x00000803: uint8, three dimensions
IMAGE_SIDE = 28
SPLITS = ("train", "t10k")
GZIP_MAGIC = b"\x1f\x8b"


def file_names(split: str) -> tuple[str, str]:
    """The images and labels file names of a split ('train' or 't10k'), without .gz."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"


def all_file_names() -> list[str]:
    """The four raw IDX names of the tutorial's dataset folder."""
    return [name for split in SPLITS for name in file_names(split)]


def read_bytes(path: str | os.PathLike) -> bytes:
    """The decompressed content of an IDX file; gzip is detected by its magic bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return data


def parse(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking magic number and length."""
    if len(data) < 4:
        raise DataError(f"{name}: truncated: {len(data)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", data[:4])[0]
    if magic not in (LABELS_MAGIC, IMAGES_MAGIC):
        raise DataError(
            f"{name}: wrong magic number {magic} (0x{magic:08x}); "
            f"expected {LABELS_MAGIC} for labels or {IMAGES_MAGIC} for images"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated header: {len(data)} bytes, expected {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{name}: {problem}: {len(data)} bytes, header {shape} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw or .gz) into a uint8 array."""
    return parse(read_bytes(path), str(path))


def read_images(path: str | os.PathLike) -> np.ndarray:
    """Read an images file: uint8 [N, 28, 28]."""
    return check_images(read_idx(path), str(path))


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a labels file: uint8 [N], each 0-9."""
    return check_labels(read_idx(path), str(path))


def check_images(array: np.ndarray, name: str) -> np.ndarray:
    """Return `array` if it is an images array [N, 28, 28]; DataError naming `name` otherwise."""
    if array.ndim != 3:
        raise DataError(f"{name}: not an images file (magic {LABELS_MAGIC} is for labels)")
    if array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{name}: images are {array.shape[1]}x{array.shape[2]}, expected 28x28")
    return array


def check_labels(array: np.ndarray, name: str) -> np.ndarray:
    """Return `array` if it is a labels array [N] of digits 0-9; DataError naming `name` otherwise."""
    if array.ndim != 1:
        raise DataError(f"{name}: not a labels file (magic {IMAGES_MAGIC} is for images)")
    bad = np.flatnonzero(array > 9)
    if bad.size:
        raise DataError(
            f"{name}: {bad.size} labels outside 0-9 (first at index {bad[0]}: {array[bad[0]]})"
        )
    return array


def check_counts(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str) -> None:
    """DataError naming both files unless there is one label per image."""
    if len(images) != len(labels):
        raise DataError(
            f"{images_name} has {len(images)} images but {labels_name} has {len(labels)} labels"
        )


def encode(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array of 1 (labels) or 3 (images) dimensions."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"IDX payload must be uint8, not {array.dtype}")
    if array.ndim not in (1, 3):
        raise DataError(f"IDX arrays here have 1 or 3 dimensions, not {array.ndim}")
    magic = LABELS_MAGIC if array.ndim == 1 else IMAGES_MAGIC
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an IDX file; a name ending in .gz is gzip-compressed (mtime 0, reproducible)."""
    path = Path(path)
    data = encode(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.write_bytes(data)
    return path


def find_file(folder: str | os.PathLike, name: str) -> Path:
    """The raw or .gz file `name` in `folder`, raw preferred."""
    folder = Path(folder)
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: neither {name} nor {name}.gz found")


def read_split(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N,28,28] and labels [N] of one split, checking that the counts agree."""
    images_name, labels_name = file_names(split)
    images_path = find_file(folder, images_name)
    labels_path = find_file(folder, labels_name)
    images, labels = read_images(images_path), read_labels(labels_path)
    check_counts(images, labels, str(images_path), str(labels_path))
    return images, labels
