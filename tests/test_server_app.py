"""The Flask app with injected fake services: routes, exact statuses and bodies, loading and warm-up."""
from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from modelarts_mnist.errors import InferenceFailed
from modelarts_mnist.server.app import ServeConfig, create_app
from modelarts_mnist.server.loading import WARMUP_ROUNDS

MR0105 = {"erno": "MR.0105", "msg": "Recognition failed", "words_result": {}}
TOO_LARGE = {"error_code": "APIG.0201", "error_msg": "Request entity too large"}


class FakeService:
    """Records what inference() got; answers `result` or raises `error`."""

    model_name = "fake"

    def __init__(self, result=None, error=None):
        self.result = {"predicted_label": "七"} if result is None else result
        self.error = error
        self.calls = []

    def inference(self, data):
        self.calls.append({k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()})
        if self.error is not None:
            raise self.error
        return self.result

    def _preprocess(self, data):
        return data


def client_for(service=None, **config):
    return create_app(service or FakeService(), ServeConfig(**config)).test_client()


def png_form(name="7.png", payload=b"\x89PNG fake"):
    return {"images": (io.BytesIO(payload), name)}


def test_multipart_post_reaches_service_in_modelarts_shape_and_answers_utf8_json():
    service = FakeService()
    response = client_for(service).post("/", data=png_form())
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "七".encode() in response.data  # ensure_ascii=False: no \\u escapes
    assert response.get_json() == {"predicted_label": "七"}
    [data] = service.calls
    assert list(data["images"]) == ["7.png"] and data["images"]["7.png"].getvalue() == b"\x89PNG fake"


def test_json_post_reaches_service_as_parsed_dict_and_list_results_are_arrays():
    service = FakeService(result=[{"predicted_label": "1"}, {"predicted_label": "2"}])
    response = client_for(service).post("/", json={"images": ["a", "b"]})
    assert response.status_code == 200
    assert response.get_json() == [{"predicted_label": "1"}, {"predicted_label": "2"}]
    assert service.calls == [{"images": ["a", "b"]}]


@pytest.mark.parametrize("error, status", [(KeyError("images"), 400), (TypeError("not an image"), 400),
                                           (ValueError("boom"), 500), (RuntimeError("oom"), 500)],
                         ids=["KeyError", "TypeError", "ValueError", "RuntimeError"])
def test_raw_exception_from_user_code_is_mr0105_with_modelarts_status(error, status, caplog):
    with caplog.at_level(logging.WARNING):
        response = client_for(FakeService(error=error)).post("/", data=png_form())
    assert response.status_code == status
    assert response.get_json() == MR0105
    assert type(error).__name__ in response.headers["X-Error-Detail"]
    # A 500 logs the user code's traceback; a 400 (the client's fault) one line without one.
    [record] = caplog.records
    assert (record.exc_info is not None and record.exc_info[1].__cause__ is error) == (status == 500)


def test_inference_failed_from_the_shim_keeps_its_status():
    error = InferenceFailed("TypeError: image 7.png: cannot identify image file", http_status=400)
    response = client_for(FakeService(error=error)).post("/", data=png_form())
    assert response.status_code == 400
    assert response.get_json() == MR0105
    assert response.headers["X-Error-Detail"] == "TypeError: image 7.png: cannot identify image file"


def test_detail_header_is_one_ascii_line_of_at_most_300_chars():
    error = KeyError("名字\nsecond line " + "x" * 500)
    response = client_for(FakeService(error=error)).post("/", data=png_form())
    detail = response.headers["X-Error-Detail"]
    assert response.status_code == 400
    assert len(detail) <= 300 and "\n" not in detail and detail.isascii() and "\\u540d" in detail


@pytest.mark.parametrize("kwargs", [{"data": b"hello", "content_type": "text/plain"}, {"data": b""},
                                    {"data": b"{oops", "content_type": "application/json"},
                                    {"data": b"--b\r\nxx", "content_type": "multipart/form-data; boundary=b"}],
                         ids=["text", "empty", "bad-json", "truncated-multipart"])
def test_body_neither_json_nor_form_is_mr0101_and_never_reaches_service(kwargs):
    service = FakeService()
    response = client_for(service).post("/", **kwargs)
    assert response.status_code == 400
    body = response.get_json()
    assert body == {"erno": "MR.0101", "msg": "The input parameter is invalid", "words_result": {}}
    assert response.headers["X-Error-Detail"]
    assert service.calls == []


def test_declared_content_length_over_limit_is_413_before_reading():
    service = FakeService()
    response = client_for(service).post("/", data=b"{}", content_type="application/json",
                                        environ_overrides={"CONTENT_LENGTH": str(10**12)})
    assert response.status_code == 413
    assert response.get_json() == TOO_LARGE
    assert response.headers["Connection"] == "close"
    assert service.calls == []


def test_body_over_limit_is_413_with_exact_body():
    response = client_for(max_body_bytes=1000).post("/", data=png_form(payload=b"x" * 5000))
    assert response.status_code == 413
    assert response.get_json() == TOO_LARGE


def test_chunked_body_over_limit_is_413():
    service = FakeService()
    body = json.dumps({"images": "x" * 5000}).encode()
    response = client_for(service, max_body_bytes=1000).post(
        "/", input_stream=io.BytesIO(body), content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})
    assert response.status_code == 413
    assert response.get_json() == TOO_LARGE
    assert service.calls == []


@pytest.mark.parametrize("headers", [{}, {"X-Auth-Token": "wrong"}, {"X-Auth-Token": "s3cret "}],
                         ids=["missing", "wrong", "near-miss"])
def test_auth_token_required_when_configured(headers):
    service = FakeService()
    response = client_for(service, auth_token="s3cret").post("/", data=png_form(), headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error_code"] == "APIG.0301"
    assert service.calls == []


def test_right_token_is_accepted_and_health_needs_none():
    client = client_for(auth_token="s3cret")
    assert client.post("/", data=png_form(), headers={"X-Auth-Token": "s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200


def test_health_is_200_true_for_a_ready_service():
    response = client_for().get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"health": "true"}


def test_health_is_503_while_loading_then_200_after_warm_up():
    release, service = threading.Event(), FakeService()

    def loader(config):
        assert release.wait(10)
        return service

    app = create_app(config=ServeConfig(model_dir=None), loader=loader)
    client = app.test_client()
    assert client.get("/health").status_code == 503
    loading = client.post("/", data=png_form())
    assert loading.status_code == 503 and loading.get_json()["error_code"] == "ModelArts.4503"
    release.set()
    wait_until_ready(client)
    assert len(service.calls) == WARMUP_ROUNDS  # warmed up through the whole app before ready
    assert list(service.calls[0]["images"]) == ["warmup.png"]
    assert client.post("/", data=png_form()).status_code == 200


def test_failed_load_keeps_health_503_with_the_reason():
    def loader(config):
        raise RuntimeError("no customize_service.py")

    app = create_app(config=ServeConfig(), loader=loader)
    app.extensions["modelarts_mnist.slot"].fill_thread.join(10)
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert "failed to load: no customize_service.py" in response.headers["X-Error-Detail"]


def test_failed_load_in_the_foreground_raises():
    def loader(config):
        raise RuntimeError("no customize_service.py")

    with pytest.raises(RuntimeError, match="no customize_service.py"):
        create_app(config=ServeConfig(load_in_background=False), loader=loader)


def test_warm_up_failure_still_reports_healthy(caplog):
    with caplog.at_level(logging.WARNING):
        app = create_app(config=ServeConfig(load_in_background=False),
                         loader=lambda config: FakeService(error=KeyError("image")))
    assert app.test_client().get("/health").status_code == 200
    assert any("warm-up request answered 400" in r.getMessage() for r in caplog.records)


def test_get_root_redirects_browsers_to_the_page():
    response = client_for().get("/", headers={"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html;q=0"],
                         ids=["none", "any", "json", "html-refused"])
def test_other_get_root_is_405_json(accept):
    headers = {"Accept": accept} if accept else {}
    response = client_for().get("/", headers=headers)
    assert response.status_code == 405
    assert response.get_json() == {"error_code": "MR.0101", "error_msg": "Method Not Allowed"}
    assert response.headers["Allow"] == "POST"


def test_unknown_path_and_method_are_json():
    client = client_for()
    missing = client.post("/v1/infers/nothing")
    assert missing.status_code == 404 and missing.get_json()["error_code"] == "APIG.0101"
    wrong = client.put("/")
    assert wrong.status_code == 405 and wrong.mimetype == "application/json"


def test_unserialisable_result_is_a_json_500_not_html(caplog):
    with caplog.at_level(logging.ERROR):
        response = client_for(FakeService(result={"score": object()})).post("/", data=png_form())
    assert response.status_code == 500
    assert response.get_json() == MR0105
    assert caplog.records


def test_page_is_mounted_and_describes_the_service():
    client = client_for()
    assert client.get("/ui/model.json").get_json()["model_name"] == "mnist"
    assert client.get("/ui/").status_code == 200


def wait_until_ready(client, timeout=10.0):
    """Poll /health until 200 (the loader runs in a thread)."""
    import time

    deadline = time.monotonic() + timeout
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "service never became healthy"
        time.sleep(0.01)


def test_health_waits_for_the_ready_gate_of_sibling_workers():
    siblings_warm = []
    client = client_for(ready_gate=lambda: bool(siblings_warm))
    response = client.get("/health")
    assert response.status_code == 503 and "other workers" in response.headers["X-Error-Detail"]
    siblings_warm.append(True)
    assert client.get("/health").status_code == 200
