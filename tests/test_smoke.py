"""smoke: requests built from config.json's declared schema, and answers compared across engines."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from modelarts_mnist.smoke import difference, json_problem, sample_images, smoke_requests


def api(content_type, properties):
    return {"apis": [{"url": "/", "method": "post", "request": {
        "Content-type": content_type, "data": {"type": "object", "properties": properties}}}]}


def test_multipart_file_field_gets_each_sample_image_under_its_declared_name():
    requests = smoke_requests(api("multipart/form-data", {"input_img": {"type": "file"}}))
    assert [r.name for r in requests] == ["multipart/form-data with digit.png", "multipart/form-data with photo.jpg"]
    data = requests[1].make()
    [(filename, handle)] = data["input_img"].items()
    assert filename == "photo.jpg" and Image.open(handle).format == "JPEG"
    assert requests[1].make()["input_img"]["photo.jpg"].read(2) == b"\xff\xd8"  # fresh file per call


def test_json_request_carries_files_as_base64_and_typed_values():
    config = api("application/json", {"images": {"type": "file"}, "threshold": {"type": "number"},
                                      "ids": {"type": "array", "items": {"type": "integer"}},
                                      "mode": {"type": "string", "enum": ["fast", "slow"]}})
    data = smoke_requests(config)[0].make()
    assert base64.b64decode(data["images"]) == sample_images()["digit.png"]
    assert data["threshold"] == 1.0 and data["ids"] == [1] and data["mode"] == "fast"
    json.dumps(data)


def test_text_form_fields_are_strings_and_no_apis_means_the_default_images_field():
    data = smoke_requests(api("multipart/form-data", {"req_data": {"type": "array", "items": {"type": "number"}}}))[0].make()
    assert data == {"req_data": "[1.0]"}
    default = smoke_requests({})[0].make()
    assert list(default) == ["images"] and isinstance(default["images"]["digit.png"], io.BytesIO)


def test_sample_photo_is_larger_than_a_digit():
    assert Image.open(io.BytesIO(sample_images()["photo.jpg"])).size != (28, 28)


@pytest.mark.parametrize("answer, ok", [
    ({"mnist_result": 7}, True), ({"predict label": "7"}, True), ([1, 2.5, "x"], True),
    ({"label": __import__("numpy").int64(7)}, False), ({"scores": __import__("numpy").zeros(2)}, False),
], ids=["mnist_result", "older-tutorial", "list", "numpy-int64", "ndarray"])
def test_json_problem(answer, ok):
    assert (json_problem(answer) == "") is ok


@pytest.mark.parametrize("local, remote, found", [
    ({"predicted_label": "7", "scores": [["7", "0.982"]]}, {"predicted_label": "7", "scores": [["7", "0.983"]]}, ""),
    ({"p": [0.5, 0.25]}, {"p": [0.50001, 0.25]}, ""),
    ({"predicted_label": "7"}, {"predicted_label": "1"}, "$.predicted_label: '7' here, '1' on the engine"),
    ({"p": [0.5]}, {"p": [0.6]}, "$.p[0]: 0.5 here, 0.6 on the engine"),
    ({"a": 1}, {"b": 1}, "$: keys ['a'] here, ['b'] on the engine"),
    ([1, 2], [1], "$: 2 items here, 1 on the engine"),
], ids=["rounded-strings", "float-noise", "label", "score", "keys", "length"])
def test_difference(local, remote, found):
    assert difference(local, remote) == found
