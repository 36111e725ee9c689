"""Packages shaped like real ModelArts TensorFlow packages (written here): each behaves as on ModelArts.

One small package per behaviour: a `{"mnist_result": 7}` answer, an output named `logits`, a CSV
field mapped to another tensor, a model loaded in a background thread, TF Serving's strictness
(float64 input, an extra key), the runtime's `log` and `MetricsManager`, and a declared
`scikit-image` dependency imported as `skimage`.
"""
from __future__ import annotations

import io
import json
import shutil
import sys
import textwrap
import time
from pathlib import Path

import model_service
import pytest
import tensorflow as tf
from metric.metrics_manager import MetricsManager
from PIL import Image

from model_service.errors import StepFailed

from modelarts_mnist.loader import inference_failed, load_service
from modelarts_mnist.package import check_imports, check_package
from modelarts_mnist.remote import RemoteService
from modelarts_mnist.server.app import create_app

MR0105 = {"erno": "MR.0105", "msg": "Recognition failed", "words_result": {}}
# The source runtime (model_service, log, metric), importable by this interpreter's worker.
RUNTIME_ENV = {"PYTHONPATH": str(Path(model_service.__file__).resolve().parent.parent)}


# --- building packages -----------------------------------------------------------------------------

def save_seven_model(path: Path, input_name: str, width: int, output_name: str) -> Path:
    """A SavedModel whose one signature maps input_name [None, width] float32 to output_name, class 7 always."""
    module = tf.Module()
    module.bias = tf.Variable(tf.one_hot(7, 10) * 5.0)  # a variable, so variables/ holds data as ModelArts requires

    def outputs(x):
        return {output_name: x[:, :1] * 0.0 + module.bias}

    if input_name == "images":
        @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32)])
        def serve(images):
            return outputs(images)
    else:
        @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32)])
        def serve(features):
            return outputs(features)
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """SavedModels: 'scores' and 'logits' on images [None, 784]; 'csv' maps features [None, 4] to scores."""
    root = tmp_path_factory.mktemp("real-models")
    return {"scores": save_seven_model(root / "scores", "images", 784, "scores"),
            "logits": save_seven_model(root / "logits", "images", 784, "logits"),
            "csv": save_seven_model(root / "csv", "features", 4, "scores")}


def config_for(request_fields: dict, content_type: str = "multipart/form-data", packages: tuple = ()) -> dict:
    """A config.json as real packages write it (no runtime named, so no engine is involved)."""
    return {
        "model_algorithm": "image_classification", "model_type": "TensorFlow",
        "apis": [{"protocol": "http", "url": "/", "method": "post",
                  "request": {"Content-type": content_type,
                              "data": {"type": "object", "properties": request_fields}},
                  "response": {"Content-type": "application/json",
                               "data": {"type": "object", "properties": {"mnist_result": {"type": "list"}}}}}],
        "dependencies": [{"installer": "pip", "packages": [
            {"package_name": name, "package_version": "", "restraint": ""} for name in packages]}],
    }


def make_package(folder: Path, model: Path, service: str, config: dict) -> Path:
    """A model folder: the SavedModel, customize_service.py and config.json."""
    shutil.copytree(model, folder)
    (folder / "customize_service.py").write_text(textwrap.dedent(service))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


IMAGE_FIELD = {"images": {"type": "file"}}

READ_IMAGE = '''
    import numpy as np
    from PIL import Image
    from model_service.tfserving_model_service import TfServingBaseService


    def first_image(data):
        """The first uploaded image as [1, 784] pixels, as the documentation samples read it."""
        for _, files in data.items():
            for _, handle in files.items():
                return np.asarray(Image.open(handle).convert("L").resize((28, 28)), np.float32).reshape(1, 784)
'''

MNIST_RESULT = READ_IMAGE + '''

    class DigitService(TfServingBaseService):
        def _preprocess(self, data):
            return {"images": first_image(data)}

        def _postprocess(self, data):
            scores = data["scores"][0]
            return {"mnist_result": scores.index(max(scores))}
'''


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buffer, "PNG")
    return buffer.getvalue()


def post_image(folder: Path, field: str = "images"):
    """POST one PNG to the package served by the local app: (status, JSON body, headers)."""
    client = create_app(load_service(folder)).test_client()
    response = client.post("/", data={field: (io.BytesIO(png()), "7.png")})
    return response.status_code, response.get_json(), response.headers


# --- answers ---------------------------------------------------------------------------------------

def test_a_mnist_result_answer_passes_check_and_is_served(models, tmp_path):
    folder = make_package(tmp_path / "model", models["scores"], MNIST_RESULT, config_for(IMAGE_FIELD))
    assert check_package(folder, live=False) == []
    assert post_image(folder)[:2] == (200, {"mnist_result": 7})


def test_a_service_reading_the_logits_output(models, tmp_path):
    service = READ_IMAGE + '''

    class LogitsService(TfServingBaseService):
        def _preprocess(self, data):
            return {"images": first_image(data)}

        def _postprocess(self, data):
            logits = data["logits"][0]  # nested lists, as TF Serving's answer comes back
            return {"predicted_label": str(logits.index(max(logits)))}
    '''
    folder = make_package(tmp_path / "model", models["logits"], service, config_for(IMAGE_FIELD))
    assert check_package(folder, live=False) == []
    assert post_image(folder)[:2] == (200, {"predicted_label": "7"})


CSV_SERVICE = '''
    import numpy as np
    from model_service.tfserving_model_service import TfServingBaseService


    class CsvService(TfServingBaseService):
        """Reads rows of four numbers from the csv_file field into the `features` tensor."""

        def _preprocess(self, data):
            for _, handle in data["csv_file"].items():
                rows = np.loadtxt(handle, delimiter=",", dtype=np.float32, ndmin=2)
                return {"features": rows}

        def _postprocess(self, data):
            return {"labels": [row.index(max(row)) for row in data["scores"]]}
'''


def test_a_csv_field_mapped_to_another_tensor_name(models, tmp_path):
    folder = make_package(tmp_path / "model", models["csv"], CSV_SERVICE, config_for({"csv_file": {"type": "file"}}))
    # The field is not a signature input: ModelArts does not compare them, nor does check.
    # (smoke=False: check's generated request puts an image in every file field, which a CSV reader refuses.)
    assert check_package(folder, smoke=False) == []
    client = create_app(load_service(folder)).test_client()
    response = client.post("/", data={"csv_file": (io.BytesIO(b"1,2,3,4\n5,6,7,8\n"), "rows.csv")})
    assert (response.status_code, response.get_json()) == (200, {"labels": [7, 7]})


# --- background loading ----------------------------------------------------------------------------

BACKGROUND = READ_IMAGE + '''
    import threading
    import time

    import tensorflow as tf


    class BackgroundService(TfServingBaseService):
        """Loads the model in a thread started by __init__, as Huawei's TF 2.1 sample does."""

        def __init__(self, model_name, model_path):
            self.model_name, self.model_path = model_name, model_path
            self.loaded = None
            threading.Thread(target=self.load_model).start()

        def load_model(self):
            time.sleep(LOAD_SECONDS)
            self.loaded = tf.saved_model.load(self.model_path).signatures["serving_default"]

        def _preprocess(self, data):
            return {"images": first_image(data)}

        def _inference(self, data):
            outputs = self.loaded(images=tf.constant(data["images"]))  # None while loading: TypeError
            return {name: value.numpy().tolist() for name, value in outputs.items()}

        def _postprocess(self, data):
            scores = data["scores"][0]
            return {"mnist_result": scores.index(max(scores))}
'''


def test_a_background_loading_service_is_smoke_tested_once_loaded(models, tmp_path):
    service = BACKGROUND.replace("LOAD_SECONDS", "1.0")
    folder = make_package(tmp_path / "model", models["scores"], service, config_for(IMAGE_FIELD))
    started = time.monotonic()
    assert check_package(folder, live=False) == []
    assert time.monotonic() - started >= 1.0


def test_without_the_wait_the_first_request_races_the_loading(models, tmp_path):
    service = BACKGROUND.replace("LOAD_SECONDS", "1.0")
    folder = make_package(tmp_path / "model", models["scores"], service, config_for(IMAGE_FIELD))
    status, body, headers = post_image(folder)  # load_service's default: no wait, as serve on ModelArts
    assert (status, body) == (400, MR0105) and "TypeError" in headers["X-Error-Detail"]


PLAIN_BACKGROUND = '''
    import threading
    import time

    from model_service.model_service import SingleNodeService


    class Slow(SingleNodeService):
        def __init__(self, model_name, model_path):
            super().__init__(model_name, model_path)
            self.ready = False
            threading.Thread(target=self.load, daemon=True).start()

        def load(self):
            time.sleep(0.5)
            self.ready = True

        def _inference(self, data):
            return {"ready": self.ready}
'''


def test_the_worker_answers_its_host_once_background_loading_ended(tmp_path):
    (tmp_path / "customize_service.py").write_text(textwrap.dedent(PLAIN_BACKGROUND))
    with RemoteService(sys.executable, tmp_path, env=RUNTIME_ENV) as service:
        assert service.inference({}) == {"ready": True}


# --- TF Serving's strictness ---------------------------------------------------------------------

@pytest.mark.parametrize("returned, reason", [
    ('{"images": first_image(data).astype(np.float64)}', "model input 'images' is float64, the signature expects "
                                                         "float32"),
    ('{"images": first_image(data), "threshold": 0.5}', "input tensor alias not found in signature "
                                                        "'serving_default': threshold"),
], ids=["float64", "extra-key"])
def test_tf_serving_refusals_are_errors_not_casts(models, tmp_path, returned, reason):
    service = MNIST_RESULT.replace('return {"images": first_image(data)}', "return " + returned)
    folder = make_package(tmp_path / "model", models["scores"], service, config_for(IMAGE_FIELD))
    problems = check_package(folder, live=False)
    assert problems and all(reason in p.message for p in problems), problems
    status, body, headers = post_image(folder)
    assert (status, body) == (500, MR0105)
    assert reason in headers["X-Error-Detail"] and "DigitService._inference" in headers["X-Error-Detail"]


def test_a_float64_input_is_refused_in_the_worker_too(models, tmp_path):
    service = MNIST_RESULT.replace('return {"images": first_image(data)}',
                                   'return {"images": first_image(data).astype(np.float64)}')
    folder = make_package(tmp_path / "model", models["scores"], service, config_for(IMAGE_FIELD))
    with RemoteService(sys.executable, folder, env=RUNTIME_ENV) as remote:  # the TF Serving (v1) path
        with pytest.raises(StepFailed) as caught:
            remote.inference({"images": {"7.png": io.BytesIO(png())}})
    assert caught.value.step == "_inference" and "is float64, the signature expects float32" in str(caught.value)
    assert inference_failed(caught.value).http_status == 500


# --- the runtime's log and metric modules --------------------------------------------------------

LOG_AND_METRICS = '''
    import time

    import log
    from metric.metrics_manager import MetricsManager
    from model_service.model_service import SingleNodeService

    logger = log.getLogger(__name__)


    class TimedService(SingleNodeService):
        """Overrides inference() as real packages copy it from the platform's runtime."""

        def inference(self, data):
            start = time.time()
            data = self._postprocess(self._inference(self._preprocess(data)))
            elapsed = (time.time() - start) * 1000
            logger.info("latency: " + str(elapsed) + "ms")
            if self.model_name + "_LatencyOverall" in MetricsManager.metrics:
                MetricsManager.metrics[self.model_name + "_LatencyOverall"].update(elapsed)
            return {"known_metrics": sorted(k for k in MetricsManager.metrics if k.startswith(self.model_name))}
'''

LATENCIES = ["LatencyInference", "LatencyOverall", "LatencyPostprocess", "LatencyPreprocess"]


def test_log_and_metrics_manager_are_provided(tmp_path):
    (tmp_path / "customize_service.py").write_text(textwrap.dedent(LOG_AND_METRICS))
    assert check_imports(tmp_path, {}) == []
    service = load_service(tmp_path, "digits")
    before = MetricsManager.metrics["digits_LatencyOverall"].count
    assert service.inference({}) == {"known_metrics": [f"digits_{name}" for name in LATENCIES]}
    assert MetricsManager.metrics["digits_LatencyOverall"].count == before + 1


def test_log_and_metrics_manager_in_the_tf21_engine(tf21_python, tmp_path):
    (tmp_path / "customize_service.py").write_text(textwrap.dedent(LOG_AND_METRICS))
    with RemoteService(tf21_python, tmp_path, model_name="digits") as service:  # the engine's own copy
        assert service.inference({}) == {"known_metrics": [f"digits_{name}" for name in LATENCIES]}


# --- declared dependencies -----------------------------------------------------------------------

SKIMAGE_SERVICE = '''
    from model_service.tfserving_model_service import TfServingBaseService


    class Resizing(TfServingBaseService):
        def _preprocess(self, data):
            from skimage.transform import resize  # not installed here: imported when a request comes
            return {"images": resize(data, (1, 784))}
'''


def test_a_declared_scikit_image_allows_importing_skimage(models, tmp_path):
    config = config_for(IMAGE_FIELD, packages=("scikit-image",))
    folder = make_package(tmp_path / "model", models["scores"], SKIMAGE_SERVICE, config)
    assert check_imports(folder, config) == []
    assert check_package(folder, smoke=False) == []
    undeclared = config_for(IMAGE_FIELD)
    [problem] = check_imports(folder, undeclared)
    assert "imports 'skimage.transform'" in problem.message
