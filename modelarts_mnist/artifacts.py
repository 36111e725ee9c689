"""Where the user artifacts (boot file, inference code, config.json) live: the checkout or the install."""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import PackageError

BOOT_FILE = "codes/train_mnist_tf.py"
INFERENCE_CODE = "model/customize_service.py"
CONFIG_JSON = "config.json"


def artifact_roots() -> list[Path]:
    """Candidate roots: the source checkout first, then setup.py's data_files location."""
    checkout = Path(__file__).resolve().parent.parent
    return [checkout, Path(sys.prefix) / "share" / "modelarts-mnist"]


def artifact_path(relative: str) -> Path:
    """The path of one user artifact, e.g. artifact_path(BOOT_FILE)."""
    for root in artifact_roots():
        candidate = root / relative
        if candidate.is_file():
            return candidate
    raise PackageError(f"{relative} not found in {', '.join(map(str, artifact_roots()))}")
