"""lite_engine: LiteRT without TensorFlow, converted once per SavedModel content, or TensorFlow and why."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from model_service import lite_engine
from model_service.lite_engine import plan_engine, prepare_engine, run_converter, tensorflow_in_code
from model_service.lite_path import TOLERANCE, cache_folder, saved_model_key
from model_service.tfserving_model_service import TfServingBaseService

from fixtures.scaler import Scaler


def save(module, path, function=None):
    tf.saved_model.save(module, str(path), signatures={"predict_images": function or module.predict})
    return path


@pytest.fixture(scope="module")
def other_flatbuffer(tmp_path_factory):
    """A LiteRT model with the same graph and other weights: scores far more than 1e-5 apart."""
    other = Scaler(factor=3.0)
    return tf.lite.TFLiteConverter.from_concrete_functions([other.predict.get_concrete_function()], other).convert()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELARTS_MNIST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "lite"


class Counting:
    """The real converter (a TensorFlow subprocess), counting its runs; `then` may tamper with its output."""

    def __init__(self, then=None):
        self.calls, self.then = 0, then

    def __call__(self, model_dir, prefix):
        self.calls += 1
        run_converter(model_dir, prefix)
        if self.then:
            self.then(prefix)


def signature_scores(model_dir, images):
    return tf.saved_model.load(str(model_dir)).signatures["predict_images"](images=images)["scores"].numpy()


def test_converts_once_per_content_and_reproduces_the_signature(tmp_path, cache, other_flatbuffer):
    module = Scaler()
    model_dir = save(module, tmp_path / "model")
    convert = Counting()
    plan = plan_engine(str(model_dir), convert=convert)
    assert plan.litert and plan.reason == "" and plan.difference <= TOLERANCE
    images = np.random.default_rng(1).random((5, 784), np.float32) * 255
    np.testing.assert_allclose(plan.signature({"images": images})["scores"], signature_scores(model_dir, images),
                               atol=TOLERANCE)
    assert plan_engine(str(model_dir), convert=convert).litert and convert.calls == 1  # the cache answers
    key = saved_model_key(model_dir)
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [
        f"{key}.json", f"{key}.npz", f"{key}.tflite"]  # no temporary file left behind
    module.factor.assign(2.0)  # other weights: other content, converted again
    save(module, model_dir)
    again = plan_engine(str(model_dir), convert=convert)
    assert convert.calls == 2 and saved_model_key(model_dir) != key
    np.testing.assert_allclose(again.signature({"images": images})["scores"], signature_scores(model_dir, images),
                               atol=TOLERANCE)
    (cache / f"{saved_model_key(model_dir)}.tflite").write_bytes(other_flatbuffer)  # a damaged cache
    damaged = plan_engine(str(model_dir), convert=convert)
    assert damaged.engine == "tensorflow" and "no longer gives the signature's outputs" in damaged.reason


def test_a_parity_failure_falls_back_and_is_not_converted_again(tmp_path, cache, other_flatbuffer):
    model_dir = save(Scaler(), tmp_path / "model")
    convert = Counting(then=lambda prefix: open(prefix + ".tflite", "wb").write(other_flatbuffer))
    plan = plan_engine(str(model_dir), convert=convert)
    assert plan.engine == "tensorflow" and "outputs differ from the signature's by" in plan.reason
    assert prepare_engine(str(model_dir), convert=convert) == plan.reason and convert.calls == 1


def test_a_crashed_converter_is_tried_again_next_time(tmp_path, cache):
    model_dir = save(Scaler(), tmp_path / "model")
    calls = []

    def crash(model_dir, prefix):
        calls.append(prefix)
        raise RuntimeError("exit status -9: killed")

    assert plan_engine(str(model_dir), convert=crash).reason == "the LiteRT converter failed: exit status -9: killed"
    plan_engine(str(model_dir), convert=crash)
    assert len(calls) == 2 and not list(cache.glob("*.json"))


class TwoInputs(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 4], tf.float32)])
    def add(self, a, b):
        return {"sum": a + b}


class PythonOp(tf.Module):
    """A TensorFlow-only op (py_function): LiteRT's builtin ops cannot express it."""

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
    def predict(self, images):
        return {"scores": tf.py_function(lambda x: x[:, :10] * 2.0, [images], tf.float32)}


@pytest.mark.parametrize("module, method, reason", [
    (TwoInputs, "add", "several inputs or outputs"),
    (PythonOp, "predict", "conversion failed"),
], ids=["two-inputs", "tf-only-op"])
def test_signatures_litert_cannot_take_fall_back_with_the_reason(tmp_path, cache, module, method, reason):
    instance = module()
    model_dir = save(instance, tmp_path / "model", getattr(instance, method))
    plan = plan_engine(str(model_dir))
    assert plan.engine == "tensorflow" and plan.reason.startswith("LiteRT cannot take this model: ")
    assert reason in plan.reason


@pytest.mark.parametrize("code, found", [
    ("import tensorflow as tf\n", "customize_service.py:1 imports tensorflow"),
    ("import numpy\nfrom tensorflow.keras import layers\n", "customize_service.py:2 imports tensorflow.keras"),
    ("import keras\n", "imports keras"),
    ("tf = __import__('tensorflow')\n", "names the module 'tensorflow'"),
    ("import importlib\ntf = importlib.import_module('tensorflow.compat.v1')\n", "names the module"),
    ("class S:\n    def _inference(self, d):\n        return self.saved_model.signatures\n", "uses .saved_model"),
    ("class S:\n    def _load_model(self):\n        return 1\n", "defines _load_model"),
    ("class S:\n    def f(self):\n        return self.signature.function\n", "uses .signature.function"),
], ids=["import", "from-import", "keras", "dunder-import", "import-module", "saved-model", "load-model",
        "signature-function"])
def test_package_code_using_tensorflow_is_found(tmp_path, code, found):
    (tmp_path / "customize_service.py").write_text(code)
    assert found in tensorflow_in_code(str(tmp_path))


def test_a_helper_module_beside_the_service_counts(tmp_path):
    (tmp_path / "customize_service.py").write_text("from helpers.net import run\n")
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "net.py").write_text("\n\nimport tensorflow\n")
    assert tensorflow_in_code(str(tmp_path)) == f"{os.path.join('helpers', 'net.py')}:3 imports tensorflow"


def test_the_tutorials_service_and_plain_text_need_no_tensorflow(tmp_path, repo_root):
    shutil.copy(repo_root / "model" / "customize_service.py", tmp_path)
    (tmp_path / "notes.py").write_text('"""Trained with tensorflow; keras docs."""\nNAME = "tensorflow is here"\n')
    assert tensorflow_in_code(str(tmp_path)) == ""


@pytest.mark.parametrize("env, reason", [
    ({"MODELARTS_MNIST_LITE": "0"}, "MODELARTS_MNIST_LITE=0 turns the LiteRT path off"),
    ({"MODELARTS_MNIST_SAVEDMODEL_LOADER": "v1"}, "MODELARTS_MNIST_SAVEDMODEL_LOADER=v1 asks for TensorFlow's"),
], ids=["switched-off", "session-loader"])
def test_settings_choose_tensorflow(tmp_path, monkeypatch, env, reason):
    (tmp_path / "saved_model.pb").write_bytes(b"")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert lite_engine.tensorflow_reason(str(tmp_path)).startswith(reason)


def test_a_service_class_loading_its_own_model_chooses_tensorflow(tmp_path):
    class Own(TfServingBaseService):
        def _load_model(self):
            raise AssertionError("not called by tensorflow_reason")

    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert lite_engine.tensorflow_reason(str(tmp_path), Own) == "Own loads its own model (_load_model)"
    assert lite_engine.tensorflow_reason(str(tmp_path), TfServingBaseService) == ""


PREPARE = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from model_service.lite_engine import prepare_engine
print("REASON " + json.dumps(prepare_engine(sys.argv[1])))
print("TENSORFLOW", "tensorflow" in sys.modules)
"""


def test_two_services_starting_together_convert_once(tmp_path, cache):
    model_dir = save(Scaler(), tmp_path / "model")
    env = {**os.environ, "MODELARTS_MNIST_CACHE": str(cache.parent)}
    starts = [subprocess.Popen([sys.executable, "-c", PREPARE, str(model_dir)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    outputs = [start.communicate(timeout=600)[0] for start in starts]
    assert [start.returncode for start in starts] == [0, 0], outputs
    assert [out.count("converting ") for out in outputs] in ([1, 0], [0, 1]), outputs
    assert all('REASON ""' in out and "TENSORFLOW False" in out for out in outputs), outputs
    verdict = json.loads(next(cache.glob("*.json")).read_text())
    assert verdict["ok"] and verdict["signature"] == "predict_images"


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELARTS_MNIST_CACHE", str(tmp_path / "elsewhere"))
    assert cache_folder() == tmp_path / "elsewhere" / "lite" and cache_folder().is_dir()


def test_the_converter_writes_nothing_half_way_for_a_refused_model(tmp_path):
    source = textwrap.dedent("""
        import sys
        from model_service.lite_convert import main
        main([sys.argv[1], sys.argv[2]])
    """)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"not a SavedModel")
    prefix = str(tmp_path / "out")
    done = subprocess.run([sys.executable, "-c", source, str(tmp_path / "model"), prefix], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "out.result.json").read_text())
    assert result["ok"] is False and "did not load" in result["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.result.json"]
