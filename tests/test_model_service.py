"""The SingleNodeService pipeline contract, with a fake subclass."""
from __future__ import annotations

import logging

import pytest
from model_service.model_service import BaseService, SingleNodeService

from modelarts_mnist.errors import InferenceFailed, InvalidInput


class RecordingService(SingleNodeService):
    """Records each hook's input and returns a tagged value."""

    def __init__(self, fail_in=None, error=None):
        super().__init__("fake", "/nowhere")
        self.calls = []
        self.fail_in, self.error = fail_in, error

    def _hook(self, step, data, result):
        self.calls.append((step, data))
        if step == self.fail_in:
            raise self.error
        return result

    def _preprocess(self, data):
        return self._hook("pre", data, {"images": [[1.0] * 4]})

    def _inference(self, data):
        return self._hook("inf", data, {"scores": [[0.1, 0.9]]})

    def _postprocess(self, data):
        return self._hook("post", data, {"predicted_label": "1"})


def test_base_service_stores_its_arguments():
    service = BaseService("mnist", "/home/mind/model")
    assert (service.model_name, service.model_path) == ("mnist", "/home/mind/model")


def test_inference_runs_hooks_in_order_feeding_each_result_to_the_next():
    service = RecordingService()
    answer = service.inference({"images": {"7.png": b"x"}})
    assert answer == {"predicted_label": "1"}
    assert service.calls == [("pre", {"images": {"7.png": b"x"}}),
                             ("inf", {"images": [[1.0] * 4]}),
                             ("post", {"scores": [[0.1, 0.9]]})]


def test_default_hooks_are_identity():
    data = {"images": object()}
    assert SingleNodeService("m", "/p").inference(data) is data


def test_step_times_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="model_service.model_service"):
        RecordingService().inference({})
    logged = " ".join(r.getMessage() for r in caplog.records)
    for step in ("preprocess time", "inference time", "postprocess time"):
        assert step in logged


@pytest.mark.parametrize("error, status", [
    (KeyError("images"), 400),
    (TypeError("not an image"), 400),
    (ValueError("boom"), 500),
    (RuntimeError("boom"), 500),
], ids=["KeyError", "TypeError", "ValueError", "RuntimeError"])
@pytest.mark.parametrize("step", ["pre", "inf", "post"])
def test_hook_errors_become_inference_failed(step, error, status):
    service = RecordingService(fail_in=step, error=error)
    with pytest.raises(InferenceFailed) as caught:
        service.inference({})
    assert caught.value.http_status == status
    assert caught.value.__cause__ is error
    assert type(error).__name__ in caught.value.message
    assert caught.value.to_dict() == {"erno": "MR.0105", "msg": "Recognition failed", "words_result": {}}


def test_sdk_errors_pass_through_unchanged():
    error = InvalidInput("images: too many")
    with pytest.raises(InvalidInput) as caught:
        RecordingService(fail_in="pre", error=error).inference({})
    assert caught.value is error


def test_key_error_message_has_no_extra_quotes():
    with pytest.raises(InferenceFailed, match=r"KeyError: no 'images' field$"):
        RecordingService(fail_in="pre", error=KeyError("no 'images' field")).inference({})
