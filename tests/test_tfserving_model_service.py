"""TfServingBaseService: signature choice, named-array inference, describe_signature, both loaders."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from fixtures.tf1_saved_model import tf1_expected_scores
from model_service.errors import ServingInputError, SignatureError, StepFailed
from model_service.lite_engine import LiteSignature
from model_service.saved_model import LOADER_ENV, SessionModel, SessionSignature, saved_model_loader
from model_service.tfserving_model_service import TfServingBaseService, fits, pick_signature

from modelarts_mnist.loader import inference_failed


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


def load_with(loader, model_dir):
    """TfServingBaseService on model_dir, loaded by the "v1" (Session) or "v2" (eager) loader."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOADER_ENV, loader)
        return TfServingBaseService("mnist", str(model_dir))


@pytest.fixture(scope="module", params=["v2", "v1"])
def service(request, saved_model):
    """The TF 2 SavedModel served through each loader: every test below runs on both."""
    return load_with(request.param, saved_model)


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


def test_python_lists_take_the_inputs_dtype_as_make_tensor_proto_does(service):
    answer = service._inference({"images": [[0.0] * 784, [1] * 784]})
    assert len(answer["scores"]) == 2


def test_pipeline_runs_through_inference(service):
    answer = service.inference({"images": np.full((3, 784), 7.0, np.float32)})
    assert np.asarray(answer["scores"]).shape == (3, 10)


FLOAT32 = np.zeros((1, 784), np.float32)


@pytest.mark.parametrize("data, text", [
    ({"pixels": FLOAT32}, "input tensor alias not found in signature 'predict_images': pixels; "
                          "inputs expected to be in the set ['images']"),
    ({"images": FLOAT32, "extra": FLOAT32}, "not found in signature 'predict_images': extra"),
    ({}, "model input 'images' missing from _preprocess output (got [])"),
    ({"images": np.zeros((1, 784))}, "model input 'images' is float64, the signature expects float32"),
    ({"images": np.zeros((1, 784), np.uint8)}, "model input 'images' is uint8, the signature expects float32"),
    ({"images": np.float64(1.0)}, "model input 'images' is float64"),
    ({"images": np.zeros((1, 785), np.float32)}, "expects [None, 784]"),
    ({"images": np.zeros(784, np.float32)}, "has shape [784]"),
    ({"images": [["a"] * 784]}, "cannot convert to float32"),
    ([FLOAT32], "_preprocess returned list, not a dict"),
], ids=["wrong-key", "extra-key", "missing", "float64", "uint8", "numpy-scalar", "wrong-width", "no-batch",
        "not-numbers", "not-a-dict"])
def test_tf_serving_refusals_are_500s_never_casts(service, data, text):
    with pytest.raises(StepFailed) as caught:
        service.inference(data)
    assert caught.value.step == "_inference" and text in str(caught.value)
    assert isinstance(caught.value.__cause__, ServingInputError)
    failed = inference_failed(caught.value)
    assert failed.http_status == 500 and failed.to_dict()["erno"] == "MR.0105"


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
    with pytest.raises(SignatureError, match=r"/m: SavedModel has signatures \['a', 'b'\]"):
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


@pytest.mark.parametrize("setting, version, loader", [
    ("", "2.21.0", "v2"),
    ("v1", "2.1.0", "v1"),
    (" V1 ", "2.21.0", "v1"),
    ("v2", "2.1.0", "v2"),
    ("", "1.13.2", "v1"),
    ("v2", "1.13.2", "v1"),
], ids=["default-tf2", "v1-tf2", "spelling", "v2-tf21", "default-tf1", "tf1-forces-v1"])
def test_loader_choice(monkeypatch, setting, version, loader):
    monkeypatch.setenv(LOADER_ENV, setting)
    assert saved_model_loader(version) == loader


def test_an_unknown_loader_is_refused(monkeypatch):
    monkeypatch.setenv(LOADER_ENV, "tfserving")
    with pytest.raises(ValueError, match=f"{LOADER_ENV}='tfserving': expected one of v1, v2"):
        saved_model_loader("2.21.0")


def test_each_loader_gives_its_backend(service):
    """v1 asks for TensorFlow's Session (as TF Serving runs it); v2 gets LiteRT, with no SavedModel loaded."""
    session = "Session loader" in service.engine_plan.reason
    assert isinstance(service.signature, SessionSignature if session else LiteSignature)
    assert (service.lite_path is None) is session
    assert ("_saved_model" in vars(service)) is session
    if session:
        assert isinstance(service.saved_model, SessionModel)


@pytest.fixture(scope="module", params=["v2", "v1"])
def tf1_service(request, tf1_saved_model):
    """The TF 1-style SavedModel (VariableV2, builder-saved) served through each loader."""
    return load_with(request.param, tf1_saved_model)


def test_tf1_saved_model_scores_match_on_both_loaders(tf1_service):
    images = np.random.RandomState(3).uniform(0, 255, (5, 784)).astype(np.float32)
    scores = np.asarray(tf1_service.inference({"images": images})["scores"])
    np.testing.assert_allclose(scores, tf1_expected_scores(images), atol=1e-5)


def test_both_loaders_describe_the_tf1_signature_alike(tf1_service):
    assert tf1_service.describe_signature() == {
        "name": "predict_images",
        "inputs": {"images": {"dtype": "float32", "shape": [None, 784]}},
        "outputs": {"scores": {"dtype": "float32", "shape": [None, 10]}},
    }


def test_an_ambiguous_saved_model_fails_to_load(tmp_path):
    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return {"y": x * 2}

    module = Two()
    concrete = module.double.get_concrete_function()
    tf.saved_model.save(module, str(tmp_path), signatures={"a": concrete, "b": concrete})
    with pytest.raises(SignatureError, match=r"SavedModel has signatures \[.*'a'.*\]"):
        load_with("v1", tmp_path)


def test_self_model_describes_the_model_as_the_platforms_model_def(tf1_service):
    import tensorflow as tf

    model = tf1_service.model
    assert model.model_signature == "predict_images" and model.model_name == tf1_service.model_name
    assert model.model_inputs == {"images": tf.float32} and model.model_outputs == {"scores": tf.float32}
    assert model.model_path == tf1_service.model_path


def test_a_service_that_loads_its_own_model_describes_no_signature():
    class OwnLoader(TfServingBaseService):
        def __init__(self, model_name, model_path):  # TF 1.x packages skip the base class's loader
            self.model_name, self.model_path = model_name, model_path

    assert OwnLoader("mnist", "/nowhere").describe_signature() is None
