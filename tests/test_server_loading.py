"""loading.import_tensorflow: TensorFlow imported up front for SavedModel packages only, sklearn left usable."""
from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from modelarts_mnist.server.loading import import_tensorflow
import_tensorflow(sys.argv[1])
print("tensorflow" in sys.modules, "sklearn" in sys.modules)
import sklearn  # hidden only during the import: still importable afterwards
"""


def probe(model_dir) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, str(model_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_saved_model_package_gets_tensorflow_without_sklearn(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert probe(tmp_path) == "True False"


def test_a_package_without_saved_model_imports_nothing(tmp_path):
    assert probe(tmp_path) == "False False"
