"""lite_path: the TFLite path is used only when it reproduces the signature, and is thread-safe."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import tensorflow as tf
from model_service.lite_path import TOLERANCE, build_lite_path, cached_conversion, convert, unsupported
from model_service.saved_model import EagerSignature, TensorInfo
from model_service.tfserving_model_service import TfServingBaseService

from fixtures.scaler import Scaler


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = tmp_path_factory.mktemp("lite") / "model"
    module = Scaler()
    tf.saved_model.save(module, str(path), signatures={"predict_images": module.predict})
    return tf.saved_model.load(str(path))


def build(loaded, **kwargs):
    return build_lite_path(EagerSignature(loaded, "predict_images", "/unused"), **kwargs)


def test_service_uses_the_lite_path_with_the_signature_scores(loaded, tmp_path):
    lite = build(loaded)
    assert lite is not None
    images = np.random.default_rng(1).random((5, 784), np.float32) * 255
    expected = loaded.signatures["predict_images"](images=images)["scores"].numpy()
    np.testing.assert_allclose(lite({"images": images})["scores"], expected, atol=TOLERANCE)


def test_batch_size_changes_between_calls(loaded):
    lite = build(loaded)
    for batch in (1, 4, 1, 256):
        images = np.full((batch, 784), 255.0, np.float32)
        assert lite({"images": images})["scores"].shape == (batch, 10)


def test_a_converted_model_giving_other_scores_is_refused(loaded, caplog):
    other = Scaler(factor=3.0)  # same graph, other weight: scores differ by far more than 1e-5
    assert build(loaded, converter=lambda model, fn: convert(other, other.predict.get_concrete_function())) is None
    assert "outputs differ from the signature" in caplog.text


def test_a_failing_conversion_falls_back(loaded, caplog):
    def broken(model, fn):
        raise ValueError("unsupported op")

    caplog.set_level("INFO", logger="model_service.lite_path")
    assert build(loaded, converter=broken) is None
    assert "conversion failed: unsupported op" in caplog.text


def test_switched_off_by_environment(loaded, monkeypatch):
    monkeypatch.setenv("MODELARTS_MNIST_LITE", "0")
    assert build(loaded) is None


def info(dtype, shape):
    return TensorInfo(dtype, shape, tf.as_dtype(dtype).as_numpy_dtype)


def test_unsupported_signatures_are_named():
    out = {"out": info("float32", [None])}
    two = {"a": info("float32", [None, 2]), "b": info("float32", [None, 2])}
    assert "several inputs" in unsupported(two, out)
    assert "fixed shape" in unsupported({"a": info("float32", [None, None])}, out)
    assert "fixed shape" in unsupported({"a": info("float32", None)}, out)
    assert "float" in unsupported({"a": info("string", [None, 3])}, out)
    assert unsupported({"a": info("float32", [None, 784])}, out) == ""


def test_threads_each_get_correct_answers(loaded):
    lite = build(loaded)
    expected = {}
    for digit in range(4):
        images = np.zeros((1 + digit, 784), np.float32)
        images[:, digit] = 255.0
        expected[digit] = (images, lite({"images": images})["scores"])
    failures = []

    def hammer(digit):
        images, want = expected[digit]
        for _ in range(200):
            if not np.array_equal(lite({"images": images})["scores"], want):
                failures.append(digit)

    threads = [threading.Thread(target=hammer, args=(d,)) for d in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_tfserving_service_takes_the_lite_path(loaded, tmp_path):
    class Loaded(TfServingBaseService):
        def _load_model(self):
            return loaded

    service = Loaded("mnist", str(tmp_path))
    assert service.lite_path is not None
    answer = service._inference({"images": np.zeros((2, 784), np.float32)})
    assert np.asarray(answer["scores"]) == pytest.approx(np.full((2, 10), 0.1), abs=1e-6)


def test_a_new_thread_reuses_the_warmed_interpreter(loaded):
    lite = build(loaded)
    warmed = list(lite._idle)
    images = np.zeros((1, 784), np.float32)
    worker = threading.Thread(target=lite, args=({"images": images},))
    worker.start()
    worker.join()
    assert lite._idle == warmed and len(warmed) == 1


def test_conversion_is_cached_per_saved_model_content(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELARTS_MNIST_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "model"
    module = Scaler()
    tf.saved_model.save(module, str(model_dir), signatures={"predict_images": module.predict})
    calls = []

    def make():
        calls.append(1)
        return b"flatbuffer"

    assert cached_conversion(str(model_dir), make) == b"flatbuffer"
    assert cached_conversion(str(model_dir), make) == b"flatbuffer" and len(calls) == 1
    assert [p.suffix for p in (tmp_path / "cache" / "lite").glob("*.tflite")] == [".tflite"]
    module.factor.assign(2.0)  # other weights, other key: converted again
    tf.saved_model.save(module, str(model_dir), signatures={"predict_images": module.predict})
    cached_conversion(str(model_dir), make)
    assert len(calls) == 2


def test_no_cache_without_a_saved_model_on_disk(tmp_path):
    assert cached_conversion(str(tmp_path / "missing"), lambda: b"x") == b"x"
    assert cached_conversion(None, lambda: b"y") == b"y"
