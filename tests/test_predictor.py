"""Asking a model for digits in this process, and describing its answers in one line."""
from __future__ import annotations

import pytest

from modelarts_mnist.errors import MnistSdkError
from modelarts_mnist.predictor import describe, in_process


def test_an_mnist_answer_is_one_line_and_anything_else_its_json():
    assert describe({"predicted_label": "7", "scores": [["7", 0.982], ["1", 0.01]]}) == "7 (0.982)"
    assert describe({"predicted_label": "3"}) == "3 (?)"
    assert describe(["x", 1]) == '["x", 1]'


def test_a_bad_image_in_process_is_the_error_a_service_would_give(tiny_package, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(MnistSdkError, match=r"not a readable PNG.*\(HTTP 400 on a service\)") as caught:
        in_process(tiny_package)(bad)
    assert caught.value.http_status == 400
