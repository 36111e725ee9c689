"""TF 1.x packages (tf.Session, tf.saved_model.loader), written for the tf1.13 runtimes: judged on that engine."""
from __future__ import annotations

import io
import json
import shutil

from modelarts_mnist.package import check_package
from modelarts_mnist.remote import RemoteService
from modelarts_mnist.runtimes import package_environment

ENGINE = "tf1.13-python3.7-cpu"

TF1_SERVICE = '''\
import numpy as np
import tensorflow as tf
from PIL import Image

from model_service.tfserving_model_service import TfServingBaseService


class Tf1Mnist(TfServingBaseService):
    """Loads its own session, as TF 1.x packages do, instead of the base class's loader."""

    def __init__(self, model_name, model_path):
        self.model_name, self.model_path = model_name, model_path
        config = tf.ConfigProto(intra_op_parallelism_threads=1)
        self.graph = tf.Graph()
        self.session = tf.Session(graph=self.graph, config=config)
        with self.graph.as_default():
            meta = tf.saved_model.loader.load(self.session, ["serve"], model_path)
        signature = meta.signature_def["predict_images"]
        self.feed, self.fetch = signature.inputs["images"].name, signature.outputs["scores"].name

    def _preprocess(self, data):
        rows = [np.asarray(Image.open(f).convert("L").resize((28, 28)), np.float32).reshape(784)
                for files in data.values() for f in files.values()]
        return {"images": np.stack(rows)}

    def _inference(self, data):
        return {"scores": self.session.run(self.fetch, {self.feed: data["images"]}).tolist()}

    def _postprocess(self, data):
        return {"mnist_result": int(np.argmax(data["scores"][0]))}
'''

CONFIG = {"model_algorithm": "image_classification", "model_type": "TensorFlow", "runtime": "tf1.13-python3.7-gpu",
          "apis": [{"procotol": "http", "url": "/", "method": "post",
                    "request": {"Content-type": "multipart/form-data",
                                "data": {"type": "object", "properties": {"images": {"type": "file"}}}},
                    "response": {"Content-type": "applicaton/json",
                                 "data": {"type": "object", "properties": {"mnist_result": {"type": "integer"}}}}}],
          "dependencies": [{"installer": "pip", "packages": [
              {"package_name": "Pillow", "package_version": "", "restraint": ""}]}]}


def tf1_package(tmp_path, tf1_saved_model):
    folder = shutil.copytree(tf1_saved_model, tmp_path / "model")
    (folder / "customize_service.py").write_text(TF1_SERVICE)
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    return folder


def test_check_judges_a_tf1_package_on_its_engine(tmp_path, tf1_saved_model, tf113_env):
    # Today's TensorFlow has no tf.Session: the local run fails, the package is fine where it will run.
    assert check_package(tf1_package(tmp_path, tf1_saved_model)) == []


def test_check_without_the_engine_reports_the_local_failure(tmp_path, tf1_saved_model):
    problems = check_package(tf1_package(tmp_path, tf1_saved_model), live=False)
    assert problems and "ConfigProto" in problems[0].message


def test_a_tf1_package_serves_on_tf113_with_its_dependencies(tmp_path, tf1_saved_model, tf113_env):
    import numpy as np
    from PIL import Image

    folder = tf1_package(tmp_path, tf1_saved_model)
    environment = package_environment(ENGINE, folder)
    digit = io.BytesIO()
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(digit, "PNG")
    with RemoteService(environment.python, folder) as service:
        answer = service.inference({"images": {"d.png": digit.getvalue()}})
        assert service.versions["tensorflow"] == "1.13.2"
    assert set(answer) == {"mnist_result"} and 0 <= answer["mnist_result"] <= 9
