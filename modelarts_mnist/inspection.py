"""Look at a dataset folder: counts, class histograms, canonical-MNIST match, a contact sheet."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import idx
from .dataset import MNIST, Canonical, decompress, digest_mismatches, is_full_size
from .errors import DataError

SHEET_SCALE = 2  # 56 px per digit: readable without zooming
LABEL_WIDTH = 40
GAP = 2


@dataclass
class SplitReport:
    """What one split of the folder holds."""

    split: str
    count: int
    histogram: list[int]  # images per digit 0-9
    files: list[str]  # the file names present for this split (raw and/or .gz)


@dataclass
class InspectionReport:
    """The result of inspecting a dataset folder."""

    folder: Path
    splits: dict[str, SplitReport]
    canonical: bool
    canonical_reason: str
    notes: list[str] = field(default_factory=list)


def inspect_dataset(folder: str | os.PathLike, canonical: Canonical = MNIST) -> InspectionReport:
    """Read and check every IDX file of `folder`; DataError naming the first bad file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    raw: dict[str, bytes] = {}
    notes: list[str] = []
    splits = {split: inspect_split(folder, split, raw, notes) for split in idx.SPLITS}
    matched, reason = compare_canonical(raw, {s: r.count for s, r in splits.items()}, canonical)
    return InspectionReport(folder, splits, matched, reason, notes)


def inspect_split(folder: Path, split: str, raw: dict[str, bytes], notes: list[str]) -> SplitReport:
    """Check one split's files, adding their decompressed bytes to `raw` and remarks to `notes`."""
    images_name, labels_name = idx.file_names(split)
    arrays, shown, present = {}, {}, []
    for name, check in ((images_name, idx.check_images), (labels_name, idx.check_labels)):
        raw[name], arrays[name], names = read_twins(folder, name, check)
        shown[name] = str(folder / names[0])  # the copy named in error messages
        present += names
        if len(names) == 1:
            missing = f"{name}.gz" if names[0] == name else name
            notes.append(f"{missing} is missing (the tutorial folder holds raw and .gz)")
    idx.check_counts(arrays[images_name], arrays[labels_name], shown[images_name], shown[labels_name])
    histogram = np.bincount(arrays[labels_name], minlength=10).tolist()
    return SplitReport(split, len(arrays[labels_name]), histogram, present)


def read_twins(folder: Path, name: str, check: Callable) -> tuple[bytes, np.ndarray, list[str]]:
    """Decompressed bytes, checked array and present names of `name`; raw and .gz must agree."""
    contents, arrays, present = [], [], []
    for candidate in (name, f"{name}.gz"):
        path = folder / candidate
        if path.is_file():
            data = path.read_bytes()
            if data[:2] == idx.GZIP_MAGIC:
                data = decompress(data, str(path))
            arrays.append(check(idx.parse(data, str(path)), str(path)))  # each copy's defects first
            contents.append(data)
            present.append(candidate)
    if not present:
        raise DataError(f"{folder}: neither {name} nor {name}.gz found")
    if len(contents) == 2 and contents[0] != contents[1]:
        raise DataError(f"{folder / present[1]}: content differs from {folder / present[0]}")
    return contents[0], arrays[0], present


def compare_canonical(raw: dict[str, bytes], counts: dict[str, int], canonical: Canonical) -> tuple[bool, str]:
    """Whether the decompressed files are canonical MNIST, and why (not)."""
    if not is_full_size(counts, canonical):
        want = " / ".join(f"{canonical.counts[s]:,}" for s in idx.SPLITS)
        have = " / ".join(f"{counts[s]:,}" for s in idx.SPLITS)
        return False, f"{have} images; canonical MNIST has {want}"
    problems = digest_mismatches(raw, canonical)
    if problems:
        return False, "; ".join(problems)
    return True, "SHA-256 of all four decompressed files matches the published digests"


def format_report(report: InspectionReport) -> str:
    """A plain-text summary: counts, histograms, canonical match, notes."""
    lines = [f"dataset folder: {report.folder}"]
    for split in report.splits.values():
        lines.append(f"  {split.split:<6} {split.count:>7,} images  files: {', '.join(split.files)}")
    lines.append("class histogram:")
    lines.append("  digit  " + "".join(f"{d:>7}" for d in range(10)))
    for split in report.splits.values():
        lines.append(f"  {split.split:<6} " + "".join(f"{n:>7,}" for n in split.histogram))
    lines.append(f"canonical MNIST: {'yes' if report.canonical else 'no'} ({report.canonical_reason})")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def write_contact_sheet(
    images: np.ndarray, labels: np.ndarray, path: str | os.PathLike, per_class: int = 10, title: str = ""
) -> Path:
    """A PNG with one labelled row per digit showing its first `per_class` images."""
    from PIL import Image, ImageDraw, ImageFont

    tile = 28 * SHEET_SCALE
    header = 30 if title else 0
    width = LABEL_WIDTH + per_class * (tile + GAP) + GAP
    height = header + 10 * (tile + GAP) + GAP
    sheet = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=28)
    if title:
        draw.text((GAP, 4), title, fill=0, font=ImageFont.load_default(size=16))
    for digit in range(10):
        top = header + GAP + digit * (tile + GAP)
        draw.text((LABEL_WIDTH // 2, top + tile // 2), str(digit), fill=0, font=font, anchor="mm")
        for column, row in enumerate(np.flatnonzero(labels == digit)[:per_class]):
            picture = Image.fromarray(images[row]).resize((tile, tile), Image.Resampling.NEAREST)
            sheet.paste(picture, (LABEL_WIDTH + GAP + column * (tile + GAP), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def contact_sheet(folder: str | os.PathLike, path: str | os.PathLike, split: str = "train", per_class: int = 10) -> Path:
    """Write the contact sheet of one split of a dataset folder."""
    images, labels = idx.read_split(folder, split)
    title = f"{Path(folder).name} / {split}: first {per_class} images of each digit"
    return write_contact_sheet(images, labels, path, per_class, title)
