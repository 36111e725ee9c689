"""`check` against a ModelArts engine: static findings, and the package run inside the engine's environment."""
from __future__ import annotations

import json
import shutil

import pytest

from modelarts_mnist.deployment import engine_for
from modelarts_mnist.errors import EngineError
from modelarts_mnist.package import check_package

TF113_PY37 = "tf1.13-python3.7-cpu"
TF113_PY36 = "tf1.13-python3.6-cpu"


def copy_package(tiny_package, tmp_path):
    return shutil.copytree(tiny_package, tmp_path / "model")


def replace_in(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def save_the_new_way(model_dir):
    """Replace the package's SavedModel by one tf.saved_model.save writes today (resource variables)."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = tf.Variable(tf.zeros([784, 10]))

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
        def predict_images(self, images):
            return {"scores": tf.nn.softmax(images @ self.weights)}

    shutil.rmtree(model_dir / "variables")
    (model_dir / "saved_model.pb").unlink()
    scorer = Scorer()
    tf.saved_model.save(scorer, str(model_dir), signatures={"predict_images": scorer.predict_images})


def test_engine_is_the_one_config_declares_unless_named():
    assert engine_for({"runtime": "tf2.1-python3.7"}, None).tensorflow == "2.1.0"
    assert engine_for({"runtime": "tf2.1-python3.7"}, TF113_PY36).python == "3.6"
    assert engine_for({"runtime": "python2.7"}, None) is None  # not reproduced here: engine checks skipped
    with pytest.raises(EngineError, match="unknown runtime"):
        engine_for({}, "tf0.1")


def test_a_savedmodel_written_the_new_way_is_refused_naming_the_op(tiny_package, tmp_path):
    model_dir = copy_package(tiny_package, tmp_path)
    save_the_new_way(model_dir)
    problems = check_package(model_dir, runtime=TF113_PY37, live=False)
    assert problems and all(p.location == "saved_model.pb" for p in problems)
    assert any("DisableCopyOnRead" in p.message and "1.13" in p.message for p in problems)


def test_the_boot_files_export_passes_every_engine_statically(tiny_package):
    from modelarts_mnist.runtimes import RUNTIMES

    for runtime in RUNTIMES:
        assert check_package(tiny_package, runtime=runtime.name, live=False) == [], runtime.name


def test_future_annotations_is_a_syntax_problem_on_python_36(tiny_package, tmp_path):
    model_dir = copy_package(tiny_package, tmp_path)
    replace_in(model_dir / "customize_service.py", "import base64\n", "from __future__ import annotations\nimport base64\n")
    problems = check_package(model_dir, runtime=TF113_PY36, live=False)
    assert [p.location for p in problems] == ["customize_service.py:13"]
    assert "annotations" in problems[0].message
    assert check_package(model_dir, runtime=TF113_PY37, live=False) == []


def test_a_dependency_newer_than_the_engines_python_allows_is_named(tiny_package, tmp_path):
    model_dir = copy_package(tiny_package, tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    config["dependencies"][0]["packages"][1]["package_version"] = "9.1.0"
    (model_dir / "config.json").write_text(json.dumps(config))
    problems = check_package(model_dir, runtime=TF113_PY36, live=False)
    assert len(problems) == 1 and "Pillow>=9.1.0" in problems[0].message and "8.4.0" in problems[0].message


def test_live_on_tf113_answers_as_the_local_twin(tiny_package, tf113_env):
    assert check_package(tiny_package, runtime=TF113_PY37, live=True) == []


def test_live_on_python_36_names_a_pillow_api_its_pillow_lacks(tiny_package, tmp_path):
    model_dir = copy_package(tiny_package, tmp_path)
    replace_in(model_dir / "customize_service.py", 'BILINEAR = getattr(Image, "Resampling", Image).BILINEAR',
               "BILINEAR = None")
    replace_in(model_dir / "customize_service.py", "resize(size, BILINEAR,", "resize(size, Image.Resampling.BILINEAR,")
    line = next(n for n, text in enumerate((model_dir / "customize_service.py").read_text().splitlines(), 1)
                if "resize(size, Image.Resampling" in text)
    problems = check_package(model_dir, runtime=TF113_PY36, live=True)
    # Locally (Pillow 12) it works; on the engine (Pillow 8.4 on Python 3.6) the photo, which is resized, fails.
    assert [p.location for p in problems] == [TF113_PY36]
    assert "photo.jpg" in problems[0].message and "Resampling" in problems[0].message
    assert f"customize_service.py:{line}" in problems[0].message
