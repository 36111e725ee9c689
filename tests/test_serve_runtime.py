"""`serve --runtime`: the same HTTP edge, the model side inside a ModelArts engine's environment."""
from __future__ import annotations

import base64
import json

import pytest
from fixtures.serving import multipart, request, wait_healthy

from modelarts_mnist.loader import load_service
from modelarts_mnist.smoke import sample_images

ENGINES = ["tf1.13-python3.7-cpu", "tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64"]


@pytest.fixture(scope="module")
def local_answers(tiny_package, embedded_arrays):
    """What the local twin answers for a real held-out 28x28 digit and a phone-like JPEG photo."""
    import io

    from PIL import Image

    digit = io.BytesIO()
    Image.fromarray(embedded_arrays[2][0]).save(digit, "PNG")
    service = load_service(tiny_package)
    images = {"digit.png": digit.getvalue(), "photo.jpg": sample_images()["photo.jpg"]}
    return images, {name: service.inference({"images": {name: io.BytesIO(data)}}) for name, data in images.items()}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES, ids=["tf1.13", "tf2.1"])
def test_engine_answers_png_jpeg_and_base64_as_the_local_twin(engine, request_engine, tiny_package, start_serve,
                                                              local_answers):
    images, expected = local_answers
    serve = start_serve(tiny_package, "--runtime", engine, "--workers", "1")
    wait_healthy(serve, timeout=120)
    for name, data in images.items():
        body, headers = multipart({"images": data})
        status, _, answer = request(serve, "POST", "/", body, headers)
        assert status == 200, answer
        assert answer["predicted_label"] == expected[name]["predicted_label"]
        assert [[d, pytest.approx(float(p), abs=1.5e-3)] for d, p in answer["scores"]] == \
            [[d, float(p)] for d, p in expected[name]["scores"]]
    encoded = json.dumps({"images": base64.b64encode(images["digit.png"]).decode()})
    status, _, answer = request(serve, "POST", "/", encoded, {"Content-Type": "application/json"})
    assert status == 200 and answer["predicted_label"] == expected["digit.png"]["predicted_label"]
    status, _, info = request(serve, "GET", "/ui/model.json")
    assert info["engine"]["runtime"] == engine
    assert info["engine"]["tensorflow"] == ("1.13.2" if "1.13" in engine else "2.1.0")
    assert info["engine"]["python"].startswith("3.7")


@pytest.mark.slow
def test_user_code_errors_keep_their_status_on_the_engine(request_engine, tiny_package, start_serve):
    serve = start_serve(tiny_package, "--runtime", ENGINES[0], "--threaded")
    wait_healthy(serve, timeout=120)
    body, headers = multipart({"images": b"not an image"})
    status, headers, _ = request(serve, "POST", "/", body, headers)
    assert status == 400 and "not a readable PNG" in headers["X-Error-Detail"]


@pytest.fixture()
def request_engine(tf113_env, tf21_env):
    """Both engines built before `serve` starts (so its start-up is not the build)."""
    return tf113_env, tf21_env
