"""The tutorial's OBS bucket, filled from the local work folder that `demo` lays out.

    <workdir>/test-modelarts/dataset-mnist/*                 -> obs://<bucket>/dataset-mnist/
    <workdir>/test-modelarts/train-mnist/train_mnist_tf.py   -> obs://<bucket>/train-mnist/train_mnist_tf.py
    <workdir>/test-modelarts/mnist-model/V000N/model/        -> obs://<bucket>/mnist-model/V000N/model/
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import PackageError, StorageError
from .storage import CopyReport, Storage

log = logging.getLogger(__name__)

LOCAL_BUCKET = "test-modelarts"  # the folder name `demo` uses under the work folder
DATASET, CODE, MODELS = "dataset-mnist", "train-mnist", "mnist-model"
BOOT_FILE_NAME = "train_mnist_tf.py"
VERSION_NAME = re.compile(r"^V\d{4,}$")


@dataclass(frozen=True)
class Transfer:
    """One local file or folder and the URL it goes to."""

    local: Path
    url: str
    recursive: bool


def latest_version(models: Path) -> str:
    """The highest V000N under `models` that holds a model/ folder."""
    names = sorted((p.name for p in models.glob("V*") if VERSION_NAME.match(p.name) and (p / "model").is_dir()),
                   key=lambda name: int(name[1:]))
    if not names:
        raise StorageError(f"no trained version with a model/ folder in {models} (run `modelarts-mnist demo` "
                           "or train and package first)")
    return names[-1]


def plan_upload(workdir: Path, bucket: str, version: str | None = None, scheme: str = "obs") -> list[Transfer]:
    """What `upload` copies where; raises StorageError naming any missing local piece."""
    root = Path(workdir) / LOCAL_BUCKET
    version = version or latest_version(root / MODELS)
    if not VERSION_NAME.match(version):
        raise StorageError(f"version {version!r} is not of the form V0001")
    pieces = [Transfer(root / DATASET, f"{scheme}://{bucket}/{DATASET}/", True),
              Transfer(root / CODE / BOOT_FILE_NAME, f"{scheme}://{bucket}/{CODE}/{BOOT_FILE_NAME}", False),
              Transfer(root / MODELS / version / "model", f"{scheme}://{bucket}/{MODELS}/{version}/model/", True)]
    for piece in pieces:
        if not piece.local.exists():
            raise StorageError(f"cannot upload: {piece.local} does not exist (expected the layout "
                               f"{LOCAL_BUCKET}/{{{DATASET},{CODE},{MODELS}/V000N/model}} under {workdir})")
    return pieces


def refuse_failing_package(model_dir: Path, *, smoke: bool = True) -> None:
    """Run the package checks on `model_dir`; raise PackageError listing the problems when any."""
    from .package import check_package

    problems = check_package(model_dir, smoke=smoke)
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise PackageError(f"refusing to upload {model_dir}: it fails the package check:\n{listed}")


def upload_tutorial(workdir: Path, bucket: str, version: str | None = None, *, storage: Storage | None = None,
                    smoke: bool = True, echo: Callable[[str], None] = log.info) -> list[CopyReport]:
    """Check the model version, then copy dataset, boot file and model into the tutorial's bucket layout."""
    plan = plan_upload(workdir, bucket, version)
    refuse_failing_package(plan[-1].local, smoke=smoke)
    storage = storage or Storage()
    reports = []
    for piece in plan:
        report = storage.copy(str(piece.local), piece.url, recursive=piece.recursive)
        echo(f"{piece.url}: {len(report.copied)} copied, {len(report.skipped)} already there")
        reports.append(report)
    return reports
