"""The /ui blueprint through Flask's test client: page, static files, model.json and preview."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from modelarts_mnist.server.ui import create_ui_blueprint

STATIC_FILES = ["index.html", "app.js", "style.css"]


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 grayscale array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class RecordingPreprocess:
    """A stand-in for the service's _preprocess: PIL to 28x28 floats, remembering what it got."""

    def __init__(self):
        self.calls = []

    def __call__(self, data):
        self.calls.append(data)
        rows = []
        for name, file in data["images"].items():
            try:
                image = Image.open(file)
                image.load()
            except Exception as error:  # noqa: BLE001 - mirrors user code raising on a bad file
                raise TypeError(f"{name} is not a decodable image") from error
            rows.append(np.asarray(image.convert("L").resize((28, 28)), dtype=np.float32).reshape(784))
        return {"images": np.stack(rows)}


def make_client(model_info=None, preprocess=None):
    """A bare Flask app with only the /ui blueprint."""
    app = Flask(__name__)
    app.register_blueprint(create_ui_blueprint(model_info or (lambda: {"model_name": "m"}), preprocess))
    return app.test_client()


def test_page_is_served_at_ui_with_the_drawing_pad():
    response = make_client().get("/ui/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert '<canvas id="pad"' in page
    assert 'src="static/app.js"' in page and 'href="static/style.css"' in page


def test_ui_without_slash_redirects_to_the_page():
    response = make_client().get("/ui")
    assert response.status_code in (301, 308)
    assert response.headers["Location"].endswith("/ui/")


@pytest.mark.parametrize("name, mimetype", [("app.js", "text/javascript"), ("style.css", "text/css"),
                                            ("index.html", "text/html")], ids=["js", "css", "html"])
def test_static_files_are_served(name, mimetype):
    response = make_client().get(f"/ui/static/{name}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert len(response.data) > 500


@pytest.mark.parametrize("name", STATIC_FILES)
def test_static_files_load_nothing_from_other_hosts(name):
    text = make_client().get(f"/ui/static/{name}").get_data(as_text=True)
    assert not re.search(r"(src|href)\s*=\s*[\"'](https?:)?//", text)
    assert not re.search(r"@import|url\(\s*[\"']?(https?:)?//", text)
    assert "fetch(\"http" not in text


def test_unknown_static_file_is_404():
    assert make_client().get("/ui/static/nope.js").status_code == 404


def test_model_json_asks_model_info_on_every_request():
    answers = iter([{"model_name": "mnist", "version": "V0001"}, {"model_name": "mnist", "version": "V0002"}])
    client = make_client(model_info=lambda: next(answers))
    assert client.get("/ui/model.json").get_json() == {"model_name": "mnist", "version": "V0001"}
    assert client.get("/ui/model.json").get_json()["version"] == "V0002"


def test_preview_returns_exactly_what_preprocess_made():
    digit = np.zeros((56, 56), np.uint8)
    digit[8:48, 26:30] = 255
    preprocess = RecordingPreprocess()
    response = make_client(preprocess=preprocess).post(
        "/ui/preview", data={"images": (io.BytesIO(png_bytes(digit)), "one.png")})
    assert response.status_code == 200
    (image,) = response.get_json()["images"]
    expected = preprocess.__call__({"images": {"one.png": io.BytesIO(png_bytes(digit))}})["images"][0]
    assert image["filename"] == "one.png"
    assert np.array_equal(np.array(image["pixels"]), np.rint(expected).reshape(28, 28))
    decoded = Image.open(io.BytesIO(base64.b64decode(image["png"].split(",", 1)[1])))
    assert decoded.size == (28, 28)
    assert np.array_equal(np.asarray(decoded), np.array(image["pixels"], np.uint8))


def test_preview_hands_preprocess_the_modelarts_multipart_shape():
    preprocess = RecordingPreprocess()
    blank = png_bytes(np.zeros((28, 28), np.uint8))
    make_client(preprocess=preprocess).post(
        "/ui/preview", data={"images": [(io.BytesIO(blank), "a.png"), (io.BytesIO(blank), "b.png")]})
    (data,) = preprocess.calls
    assert list(data) == ["images"]
    assert list(data["images"]) == ["a.png", "b.png"]
    assert all(hasattr(f, "read") for f in data["images"].values())


def test_preview_of_a_non_image_is_a_readable_400():
    response = make_client(preprocess=RecordingPreprocess()).post(
        "/ui/preview", data={"images": (io.BytesIO(b"hello, not a picture"), "notes.txt")})
    assert response.status_code == 400
    assert response.get_json()["erno"] == "MR.0101"
    assert "notes.txt is not a decodable image" in response.headers["X-Error-Detail"]


def test_preview_without_the_images_field_is_400():
    response = make_client(preprocess=RecordingPreprocess()).post(
        "/ui/preview", data={"image": (io.BytesIO(b"x"), "x.png")})
    assert response.status_code == 400
    assert "'images'" in response.headers["X-Error-Detail"]


def test_preview_without_a_preprocess_hook_is_404():
    response = make_client().post("/ui/preview", data={"images": (io.BytesIO(b"x"), "x.png")})
    assert response.status_code == 404
    assert "no preprocessing hook" in response.headers["X-Error-Detail"]


def test_preview_rejects_a_preprocess_result_that_is_not_28x28():
    response = make_client(preprocess=lambda data: {"images": np.zeros((1, 100))}).post(
        "/ui/preview", data={"images": (io.BytesIO(b"x"), "x.png")})
    assert response.status_code == 400
    assert "shape (1, 100)" in response.headers["X-Error-Detail"]


def test_preview_failure_keeps_non_ascii_names_readable_in_the_header():
    response = make_client(preprocess=RecordingPreprocess()).post(
        "/ui/preview", data={"images": (io.BytesIO(b"junk"), "ziffer-\u00fc.txt")})
    assert response.status_code == 400
    assert "ziffer-\\xfc.txt" in response.headers["X-Error-Detail"]


def test_preview_error_from_unexpected_exception_is_500_with_modelarts_body():
    def broken(data):
        raise RuntimeError("disk on fire")

    response = make_client(preprocess=broken).post(
        "/ui/preview", data={"images": (io.BytesIO(b"x"), "x.png")})
    assert response.status_code == 500
    body = response.get_json()
    assert body.get("erno", body.get("error_code")) == "MR.0105"
    assert "disk on fire" in response.headers["X-Error-Detail"]


class FakeService:
    """A loaded service as create_app sees it: a _preprocess hook and inference()."""

    model_name = "mnist"

    def __init__(self):
        self.preprocess = RecordingPreprocess()

    def _preprocess(self, data):
        return self.preprocess(data)

    def inference(self, data):
        return {"predicted_label": "1", "scores": [["1", "0.900"]]}


def test_create_app_wires_preview_to_the_services_preprocess():
    from modelarts_mnist.server.app import ServeConfig, create_app

    service = FakeService()
    client = create_app(service=service, config=ServeConfig()).test_client()
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:15] = 200
    response = client.post("/ui/preview", data={"images": (io.BytesIO(png_bytes(digit)), "one.png")})
    assert response.status_code == 200
    assert np.array_equal(np.array(response.get_json()["images"][0]["pixels"]), digit)
    assert list(service.preprocess.calls[0]["images"]) == ["one.png"]
    assert client.get("/ui/model.json").get_json()["model_name"] == "mnist"
    assert client.get("/", headers={"Accept": "text/html"}).headers["Location"].endswith("/ui/")


def make_token_client(token="s3cret", preprocess=None):
    """A bare app with the /ui blueprint guarded by token."""
    app = Flask(__name__)
    app.register_blueprint(create_ui_blueprint(lambda: {"model_name": "m", "model_dir": "/srv/models/m"},
                                               preprocess or RecordingPreprocess(), auth_token=token))
    return app


@pytest.mark.parametrize("headers", [{}, {"X-Auth-Token": "wrong"}, {"X-Auth-Token": "s3cret "},
                                     {"X-Auth-Token": "S3CRET"}], ids=["missing", "wrong", "near-miss", "case"])
def test_routes_that_reveal_or_run_need_the_token(headers):
    preprocess = RecordingPreprocess()
    client = make_token_client(preprocess=preprocess).test_client()
    described = client.get("/ui/model.json", headers=headers)
    previewed = client.post("/ui/preview", headers=headers,
                            data={"images": (io.BytesIO(png_bytes(np.zeros((28, 28)))), "a.png")})
    for response in (described, previewed):
        assert response.status_code == 401
        assert response.get_json()["error_code"] == "APIG.0301"
        assert "/srv/models" not in response.get_data(as_text=True)
    assert preprocess.calls == []


def test_the_right_token_opens_them():
    client = make_token_client().test_client()
    assert client.get("/ui/model.json", headers={"X-Auth-Token": "s3cret"}).get_json()["model_name"] == "m"
    previewed = client.post("/ui/preview", headers={"X-Auth-Token": "s3cret"},
                            data={"images": (io.BytesIO(png_bytes(np.zeros((28, 28)))), "a.png")})
    assert previewed.status_code == 200


@pytest.mark.parametrize("path", ["/ui/", *(f"/ui/static/{name}" for name in STATIC_FILES)])
def test_the_page_and_its_files_load_without_the_token(path):
    assert make_token_client().test_client().get(path).status_code == 200


def test_a_route_added_to_the_blueprint_later_is_guarded_by_default():
    app = Flask(__name__)
    blueprint = create_ui_blueprint(lambda: {}, auth_token="s3cret")

    @blueprint.get("/secrets")
    def secrets():
        return {"secret": 42}

    app.register_blueprint(blueprint)
    client = app.test_client()
    assert client.get("/ui/secrets").status_code == 401
    assert client.get("/ui/secrets", headers={"X-Auth-Token": "s3cret"}).get_json() == {"secret": 42}


def test_the_page_has_no_inline_script_style_or_handlers():
    page = make_client().get("/ui/").get_data(as_text=True)
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="static/app.js">']
    assert "<style" not in page and not re.search(r"\sstyle\s*=", page)
    assert not re.search(r"\son[a-z]+\s*=", page, re.IGNORECASE)
    assert "javascript:" not in page.lower()
    script = make_client().get("/ui/static/app.js").get_data(as_text=True)
    assert not re.search(r"\b(eval|new Function|innerHTML|outerHTML|insertAdjacentHTML|document\.write)\b", script)


def test_every_answer_of_the_app_carries_the_security_headers():
    from modelarts_mnist.server.app import ServeConfig, create_app

    client = create_app(service=FakeService(), config=ServeConfig(auth_token="s3cret")).test_client()
    digit = {"images": (io.BytesIO(png_bytes(np.zeros((28, 28)))), "a.png")}
    answers = [client.get("/ui/"), client.get("/ui/static/app.js"), client.get("/ui/model.json"),
               client.get("/ui"), client.get("/health"), client.post("/", data=b"{", content_type="application/json"),
               client.get("/nothing"), client.post("/", headers={"X-Auth-Token": "s3cret"}, data=digit)]
    for response in answers:
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert [r.status_code for r in answers] == [200, 200, 401, 308, 200, 401, 404, 200]
