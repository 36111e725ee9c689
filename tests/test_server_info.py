"""describe_model: what /ui/model.json says about the served package."""
from __future__ import annotations

import json

import pytest

from modelarts_mnist.server.info import describe_model

SIGNATURE = {"name": "predict_images", "inputs": {"images": {"dtype": "float32", "shape": [None, 784]}},
             "outputs": {"scores": {"dtype": "float32", "shape": [None, 10]}}}


class FakeService:
    """Just the parts of a TfServingBaseService that describe_model reads."""

    model_name = "mnist"

    def describe_signature(self):
        return SIGNATURE


def make_package(root, config):
    """A `<root>/mnist-model/V0003/model` folder with the given config.json (or none)."""
    model_dir = root / "mnist-model" / "V0003" / "model"
    model_dir.mkdir(parents=True)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (model_dir / "config.json").write_text(text, encoding="utf-8")
    return model_dir


def test_describes_version_signature_and_config(tmp_path):
    config = {"model_algorithm": "image_classification", "model_type": "TensorFlow", "runtime": "python3.6",
              "metrics": {"accuracy": 0.91, "f1": 0.9}, "apis": [{"url": "/", "method": "post"}]}
    info = describe_model(make_package(tmp_path, config), FakeService())
    assert info["model_name"] == "mnist"
    assert info["version"] == "V0003"
    assert info["signature"] == SIGNATURE
    assert info["metrics"] == {"accuracy": 0.91, "f1": 0.9}
    assert info["apis"] == [{"url": "/", "method": "post"}]
    assert (info["model_type"], info["runtime"]) == ("TensorFlow", "python3.6")
    assert info["config_problem"] is None
    json.dumps(info)  # the endpoint serves it as JSON


def test_without_service_the_name_comes_from_the_folder_above_the_version(tmp_path):
    info = describe_model(make_package(tmp_path, {}))
    assert (info["model_name"], info["version"], info["signature"]) == ("mnist-model", "V0003", None)


def test_a_folder_outside_the_version_layout_has_no_version(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    info = describe_model(folder)
    assert (info["model_name"], info["version"]) == ("my-model", None)


def test_the_version_folder_itself_may_be_served(tmp_path):
    folder = tmp_path / "V0012"
    folder.mkdir()
    assert describe_model(folder)["version"] == "V0012"


@pytest.mark.parametrize("config, problem", [(None, "no config.json"), ("{not json", "not readable JSON"),
                                             ("[1, 2]", "not a JSON object")],
                         ids=["missing", "malformed", "list"])
def test_an_unusable_config_is_reported_not_raised(tmp_path, config, problem):
    info = describe_model(make_package(tmp_path, config), FakeService())
    assert problem in info["config_problem"]
    assert (info["metrics"], info["apis"], info["version"]) == ({}, [], "V0003")


def test_wrongly_typed_metrics_and_apis_are_dropped(tmp_path):
    info = describe_model(make_package(tmp_path, {"metrics": [0.9], "apis": {"url": "/"}}))
    assert (info["metrics"], info["apis"]) == ({}, [])
