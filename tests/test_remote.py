"""RemoteService: the model side in another interpreter (the worker protocol, its errors, old engines)."""
from __future__ import annotations

import io
import logging
import pickle
import shutil
import socket
import os
import sys
import threading
import time
from pathlib import Path

import model_service
import numpy as np
import pytest
from fixtures.tf1_saved_model import tf1_expected_scores
from model_service import wire
from model_service.errors import StepFailed
from werkzeug.datastructures import FileStorage

from modelarts_mnist.errors import EngineError, InferenceFailed, PackageError
from modelarts_mnist.loader import inference_failed, load_service
from modelarts_mnist.remote import RemoteService
from modelarts_mnist.server.app import ServeConfig, create_app

# The source model_service package, importable in any interpreter (engines get an installed copy).
RUNTIME_ENV = {"PYTHONPATH": str(Path(model_service.__file__).resolve().parent.parent)}

ECHO_SERVICE = '''\
import json

import numpy as np
from model_service.model_service import SingleNodeService


class ImageError(OSError):
    """A library's own exception type (like PIL's UnidentifiedImageError)."""


class Echo(SingleNodeService):
    def _preprocess(self, data):
        print("user print: preprocessing", sorted(data))
        if "missing" in data:
            return data["absent"]  # KEY-ERROR-LINE
        if "bad_image" in data:
            raise ImageError("cannot identify image file")
        if "value" in data:
            raise ValueError("no digits here")
        if "die" in data:
            import os
            os._exit(3)
        if "array" in data:
            return {"images": np.arange(6, dtype=np.float32).reshape(2, 3)}
        return data

    def _postprocess(self, data):
        if "numpy_int" in data:
            return {"label": np.int64(7)}
        return {key: describe(value) for key, value in data.items()}


def describe(value):
    if hasattr(value, "read"):
        return [type(value).__name__, value.read().decode("utf-8")]
    if isinstance(value, dict):
        return {key: describe(item) for key, item in value.items()}
    return value
'''

TF_SERVICE = '''\
import numpy as np
from model_service.tfserving_model_service import TfServingBaseService


class Digits(TfServingBaseService):
    def _preprocess(self, data):
        self.numpy_label = data.get("numpy_label") == "1"
        if "raw" in data:  # files of float32 pixels
            return {"images": np.stack([np.frombuffer(f.read(), np.float32) for f in data["raw"].values()])}
        return {"images": np.asarray(data["pixels"], np.float32)}  # KEY-ERROR-LINE

    def _postprocess(self, data):
        label = np.argmax(data["scores"][0])
        return {"scores": data["scores"], "label": label if self.numpy_label else int(label)}
'''


def line_of(source: str, marker: str = "KEY-ERROR-LINE") -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if marker in line)


def write_package(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customize_service.py").write_text(source)
    return folder


def start(python, model_dir, **kwargs) -> RemoteService:
    return RemoteService(python, model_dir, env={**RUNTIME_ENV, **kwargs.pop("env", {})}, **kwargs)


@pytest.fixture(scope="module")
def echo_dir(tmp_path_factory) -> Path:
    return write_package(tmp_path_factory.mktemp("echo"), ECHO_SERVICE)


@pytest.fixture(scope="module")
def echo(echo_dir):
    """An Echo service in a worker run by this interpreter (fast: no TensorFlow)."""
    with start(sys.executable, echo_dir) as service:
        yield service


# --- the protocol, with this interpreter as the worker --------------------------------------

def test_files_text_and_json_reach_user_code_as_modelarts_gives_them(echo):
    upload = FileStorage(io.BytesIO(b"from werkzeug"), filename="b.png")
    data = {"images": {"a.png": io.BytesIO(b"png bytes"), "b.png": upload}, "note": "hi", "n": [1, {"k": None}]}
    assert echo.inference(data) == {"images": {"a.png": ["BytesIO", "png bytes"], "b.png": ["BytesIO", "from werkzeug"]},
                                    "note": "hi", "n": [1, {"k": None}]}


def test_a_partly_read_file_is_sent_whole(echo):
    stream = io.BytesIO(b"whole file")
    stream.read(5)
    assert echo.inference({"f": {"x": stream}}) == {"f": {"x": ["BytesIO", "whole file"]}}


def test_user_prints_go_to_the_log_not_the_protocol(echo, caplog):
    with caplog.at_level(logging.INFO, logger="modelarts_mnist.remote"):
        assert echo.inference({"a": 1}) == {"a": 1}
        assert echo.ping()  # the protocol still works after the print
        # The worker's stderr is forwarded by a thread of its own: the line arrives soon, not at once
        # (a loaded CI machine once checked before it had).
        deadline = time.monotonic() + 10
        while "user print: preprocessing ['a']" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "user print: preprocessing ['a']" in caplog.text


def test_a_key_error_in_user_code_is_a_400_naming_file_and_line(echo):
    with pytest.raises(StepFailed) as caught:
        echo.inference({"missing": 1})
    failure = caught.value
    assert (failure.step, type(failure.__cause__)) == ("_preprocess", KeyError)
    assert str(failure) == f"Echo._preprocess raised KeyError: absent (at customize_service.py:{line_of(ECHO_SERVICE)})"
    assert inference_failed(failure).http_status == 400
    remote_traceback = str(failure.__cause__.__cause__)  # the worker's own, chained for the service log
    assert 'customize_service.py", line' in remote_traceback and "KeyError: 'absent'" in remote_traceback


@pytest.mark.parametrize("data, builtin, status, text", [
    ({"value": 1}, ValueError, 500, "raised ValueError: no digits here"),
    ({"bad_image": 1}, OSError, 500, "raised ImageError: cannot identify image file"),
], ids=["ValueError", "library-subclass"])
def test_other_errors_come_back_as_their_nearest_builtin(echo, data, builtin, status, text):
    with pytest.raises(StepFailed, match=text) as caught:
        echo.inference(data)
    assert type(caught.value.__cause__) is builtin
    assert inference_failed(caught.value).http_status == status


def test_a_numpy_int64_in_the_answer_is_an_error(echo):
    with pytest.raises(InferenceFailed, match="not JSON-encodable.*int64") as caught:
        echo.inference({"numpy_int": 1})
    assert caught.value.http_status == 500


def test_preprocess_returns_arrays_with_dtype_and_shape(echo):
    images = echo._preprocess({"array": 1})["images"]
    assert images.dtype == np.float32 and images.shape == (2, 3) and images[1, 2] == 5


def test_preprocess_raises_what_user_code_raised(echo):
    with pytest.raises(KeyError, match=f"customize_service.py:{line_of(ECHO_SERVICE)}"):
        echo._preprocess({"missing": 1})


def test_describe_reports_the_worker_interpreter(echo):
    assert echo.versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert echo.versions["numpy"] == np.__version__  # the service imported it
    assert echo.service_class == "Echo" and echo.describe_signature() is None
    assert echo.describe() == {"service": "Echo", "signature": None, "versions": echo.versions}


def test_threads_share_one_worker_one_request_at_a_time(echo):
    answers, failures = {}, []

    def ask(n):
        try:
            answers[n] = [echo.inference({"n": n, "k": i})["n"] for i in range(25)]
        except Exception as exc:  # reported below with the thread's number
            failures.append((n, exc))

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and answers == {n: [n] * 25 for n in range(4)}


@pytest.mark.parametrize("data, status, detail", [
    ({"images": (io.BytesIO(b"png"), "7.png")}, 200, None),
    ({"missing": "1"}, 400, f"Echo._preprocess raised KeyError: absent (at customize_service.py:{line_of(ECHO_SERVICE)})"),
    ({"value": "1"}, 500, "Echo._preprocess raised ValueError: no digits here"),
], ids=["answer", "KeyError-400", "ValueError-500"])
def test_the_server_edge_answers_a_remote_service_as_a_local_one(echo, data, status, detail):
    client = create_app(echo, ServeConfig()).test_client()
    response = client.post("/", data=data, content_type="multipart/form-data")
    assert response.status_code == status
    if detail is None:
        assert response.get_json() == {"images": {"7.png": ["BytesIO", "png"]}}
    else:
        assert response.get_json()["erno"] == "MR.0105"
        assert response.headers["X-Error-Detail"].startswith(detail)


def test_a_dead_worker_is_a_clear_error_not_a_hang(echo_dir):
    service = start(sys.executable, echo_dir)
    with service, pytest.raises(InferenceFailed, match="stopped while answering: exit code 3") as caught:
        service.inference({"die": 1})
    assert caught.value.http_status == 500
    with pytest.raises(InferenceFailed, match="model worker unavailable"):
        service.inference({"a": 1})


def test_closing_stops_the_worker(echo_dir):
    with start(sys.executable, echo_dir) as service:
        process = service._process
    assert process.poll() == 0
    with pytest.raises(InferenceFailed, match="closed"):
        service.inference({})


@pytest.mark.parametrize("source, text", [
    ("X = 1\n", r"customize_service.py: There should be one user defined service .*\(found none\)"),
    ("from model_service.model_service import SingleNodeService\n\nclass A(SingleNodeService)\n",
     r"customize_service.py:3: cannot import: SyntaxError"),
    ("from model_service.model_service import SingleNodeService\n\nclass A(SingleNodeService):\n"
     "    def __init__(self, name, path):\n        raise OSError('no model')\n",
     r"customize_service.py:5: A\('mnist', \.\.\.\) raised OSError: no model"),
], ids=["no-class", "syntax-error", "constructor"])
def test_load_failures_are_package_errors_as_locally(tmp_path, source, text):
    folder = write_package(tmp_path, source)
    with pytest.raises(PackageError, match=text):
        start(sys.executable, folder)
    with pytest.raises(PackageError, match=text):
        load_service(folder)


def test_a_worker_dying_while_loading_is_an_engine_error(tmp_path):
    folder = write_package(tmp_path, "import os, sys\nsys.stderr.write('importing the end\\n')\nos._exit(7)\n")
    with pytest.raises(EngineError, match="stopped before loading the model: exit code 7.*importing the end"):
        start(sys.executable, folder)


def test_a_worker_that_does_not_load_in_time_is_stopped(tmp_path):
    folder = write_package(tmp_path, "import time\ntime.sleep(60)\n")
    with pytest.raises(EngineError, match="did not load .* within 1 s"):
        start(sys.executable, folder, load_timeout=1)


def test_a_missing_interpreter_is_an_engine_error(echo_dir, tmp_path):
    with pytest.raises(EngineError, match="cannot start the model worker with .*no-python"):
        RemoteService(tmp_path / "no-python", echo_dir)


def test_frames_refuse_pickled_classes():
    left, right = socket.socketpair()
    with left, right:
        payload = pickle.dumps(Path("/etc"), protocol=4)
        left.sendall(wire.HEADER.pack(len(payload)) + payload)
        with pytest.raises(pickle.UnpicklingError, match="plain data only"):
            wire.receive(right)
        wire.send(left, {"ok": [b"bytes", "text", 1.5, None]})
        assert wire.receive(right) == {"ok": [b"bytes", "text", 1.5, None]}


# --- old engines: the same package answers the same on TF 1.13, TF 2.1 and here --------------

@pytest.fixture(scope="module")
def tf_package(tmp_path_factory, tf1_saved_model) -> Path:
    folder = tmp_path_factory.mktemp("tf-package") / "model"
    shutil.copytree(tf1_saved_model, folder)
    return write_package(folder, TF_SERVICE)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.RandomState(11).uniform(0, 255, (3, 784)).astype(np.float32)


@pytest.fixture(scope="module")
def local_scores(tf_package, images) -> np.ndarray:
    """The scores the package gives in this process (today's TensorFlow, the default fast path)."""
    return np.asarray(load_service(tf_package).inference({"pixels": images.tolist()})["scores"])


ENGINES = {  # id: (python fixture, loader, TensorFlow version)
    "tf1.13": ("tf113_python", "v1", "1.13.2"),
    "tf2.1": ("tf21_python", "v1", "2.1.0"),
    "tf2.1-v2-loader": ("tf21_python", "v2", "2.1.0"),
}


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request, tf_package):
    """The TF package served by RemoteService inside an old engine's interpreter."""
    python_fixture, loader, version = ENGINES[request.param]
    python = request.getfixturevalue(python_fixture)
    with start(python, tf_package, env={"MODELARTS_MNIST_SAVEDMODEL_LOADER": loader}) as service:
        service.expected_tf = version
        yield service


def test_engine_answers_the_local_scores(engine, images, local_scores):
    assert engine.versions["tensorflow"] == engine.expected_tf
    scores = np.asarray(engine.inference({"pixels": images.tolist()})["scores"])
    np.testing.assert_allclose(scores, local_scores, atol=1e-5)
    np.testing.assert_allclose(scores, tf1_expected_scores(images), atol=1e-5)


def test_engine_reads_uploaded_files(engine, images, local_scores):
    files = {f"{n}.bin": io.BytesIO(row.tobytes()) for n, row in enumerate(images)}
    answer = engine.inference({"raw": files})
    np.testing.assert_allclose(answer["scores"], local_scores, atol=1e-5)
    assert answer["label"] == int(np.argmax(local_scores[0]))


def test_engine_key_error_is_a_400_with_its_line(engine):
    with pytest.raises(StepFailed, match=f"customize_service.py:{line_of(TF_SERVICE)}") as caught:
        engine.inference({"image": []})
    assert inference_failed(caught.value).http_status == 400


def test_engine_refuses_a_numpy_int64_answer(engine, images):
    with pytest.raises(InferenceFailed, match="not JSON-encodable"):
        engine.inference({"pixels": images[:1].tolist(), "numpy_label": "1"})


def test_engine_describes_the_signature(engine):
    assert engine.describe_signature() == {
        "name": "predict_images",
        "inputs": {"images": {"dtype": "float32", "shape": [None, 784]}},
        "outputs": {"scores": {"dtype": "float32", "shape": [None, 10]}},
    }
    assert engine.versions["python"].startswith("3.7.")


RELATIVE_PATH_SERVICE = '''\
from model_service.model_service import SingleNodeService


class Labels(SingleNodeService):
    def __init__(self, name, path):
        super().__init__(name, path)
        with open("model/1/labels.txt") as labels:  # as real packages do inside the container
            self.labels = labels.read().split()

    def _inference(self, data):
        return {"labels": self.labels}
'''


def test_the_worker_runs_where_model_1_is_the_package_as_in_the_container(tmp_path):
    folder = write_package(tmp_path / "pkg", RELATIVE_PATH_SERVICE)
    (folder / "labels.txt").write_text("zero one\n")
    service = start(sys.executable, folder)
    home = service._home
    with service:
        assert service.inference({}) == {"labels": ["zero", "one"]}
    assert not os.path.exists(home) and (folder / "labels.txt").is_file()
