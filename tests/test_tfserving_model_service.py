"""TfServingBaseService: signature choice, named-array inference, describe_signature."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from model_service.tfserving_model_service import TfServingBaseService, fits, pick_signature

from modelarts_mnist.errors import InferenceFailed, PackageError


class Scaler(tf.Module):
    """A stand-in model with the pinned MNIST signature: scores from the first ten pixels."""

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
    def predict(self, images):
        return {"scores": tf.nn.softmax(images[:, :10] / 255.0)}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model"
    module = Scaler()
    tf.saved_model.save(module, str(path), signatures={"predict_images": module.predict})
    return path


@pytest.fixture(scope="module")
def service(saved_model):
    return TfServingBaseService("mnist", str(saved_model))


def test_loads_the_single_signature(service, saved_model):
    assert service.signature_name == "predict_images"
    assert service.model_path == str(saved_model)


def test_inference_takes_named_arrays_and_returns_nested_lists(service):
    images = np.zeros((2, 784), np.float32)
    images[1, 3] = 255.0
    answer = service._inference({"images": images})
    assert list(answer) == ["scores"]
    scores = answer["scores"]
    assert isinstance(scores, list) and isinstance(scores[0], list) and len(scores[0]) == 10
    assert scores[0] == pytest.approx([0.1] * 10, abs=1e-6)
    assert max(range(10), key=scores[1].__getitem__) == 3


def test_inference_casts_other_dtypes(service):
    answer = service._inference({"images": np.zeros((1, 784), np.uint8)})
    assert len(answer["scores"]) == 1


def test_pipeline_runs_through_inference(service):
    answer = service.inference({"images": np.full((3, 784), 7.0, np.float32)})
    assert np.asarray(answer["scores"]).shape == (3, 10)


@pytest.mark.parametrize("data, status, text", [
    ({"pixels": np.zeros((1, 784))}, 400, "model input 'images' missing"),
    ({"images": np.zeros((1, 785))}, 400, "expects [None, 784]"),
    ({"images": np.zeros(784)}, 400, "has shape [784]"),
    ({"images": [["a"] * 784]}, 400, "cannot convert to float32"),
], ids=["wrong-key", "wrong-width", "no-batch", "not-numbers"])
def test_bad_feeds_are_client_errors(service, data, status, text):
    with pytest.raises(InferenceFailed) as caught:
        service.inference(data)
    assert caught.value.http_status == status
    assert text in caught.value.message


def test_describe_signature(service):
    assert service.describe_signature() == {
        "name": "predict_images",
        "inputs": {"images": {"dtype": "float32", "shape": [None, 784]}},
        "outputs": {"scores": {"dtype": "float32", "shape": [None, 10]}},
    }


class FakeModel:
    def __init__(self, names):
        self.signatures = {name: None for name in names}


@pytest.mark.parametrize("names, chosen", [
    (["predict_images"], "predict_images"),
    (["a", "serving_default"], "serving_default"),
    (["__saved_model_init_op", "only"], "only"),
], ids=["single", "default-among-several", "ignores-internal"])
def test_pick_signature(names, chosen):
    assert pick_signature(FakeModel(names).signatures, "/m") == chosen


def test_pick_signature_refuses_ambiguity():
    with pytest.raises(PackageError, match=r"/m: SavedModel has signatures \['a', 'b'\]"):
        pick_signature({"a": 1, "b": 2}, "/m")


def test_load_model_is_overridable():
    seen = []

    class Fake(TfServingBaseService):
        def _load_model(self):
            seen.append(self.model_path)
            return loaded

    loaded = type("Loaded", (), {"signatures": {"serving_default": Scaler().predict.get_concrete_function()}})
    service = Fake("m", "/fake")
    assert seen == ["/fake"] and service.signature_name == "serving_default"


SPECS = [None, [], [None], [None, 784], [2, None], [1, 28, 28]]
SHAPES = [(), (3,), (0, 784), (2, 784), (2, 5), (784,), (1, 28, 28), (1, 28, 27)]


@pytest.mark.parametrize("dims", SPECS, ids=str)
def test_fits_agrees_with_tensorshape(dims):
    spec = tf.TensorShape(dims)
    assert [fits(shape, dims) for shape in SHAPES] == [spec.is_compatible_with(shape) for shape in SHAPES]
