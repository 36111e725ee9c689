"""The SingleNodeService pipeline contract, with a fake subclass."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import model_service
import model_service.model_service
import pytest
from model_service.errors import StepFailed
from metric.metrics_manager import MetricsManager
from model_service.model_service import BaseService, ModelService, SingleNodeService

from modelarts_mnist.loader import inference_failed

RUNTIME_DIR = Path(model_service.__file__).parent
RUNTIME_PACKAGES = ("model_service", "log", "metric")  # everything copied into an engine's environment


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


def test_base_service_is_the_root_model_service():
    assert BaseService is ModelService
    assert issubclass(SingleNodeService, ModelService)


def test_step_times_are_logged_in_the_platform_wording(caplog):
    with caplog.at_level(logging.INFO, logger="model_service.model_service"):
        RecordingService().inference({})
    logged = [r.getMessage() for r in caplog.records]
    for step in ("preprocess time: ", "infer time: ", "postprocess time: ", "latency: "):
        assert [line for line in logged if line.startswith(step) and line.endswith("ms")], step


class QuietLogger:
    """A logger with INFO off that fails the test if a line is still handed to it."""

    def __init__(self):
        self.asked = 0

    def isEnabledFor(self, level):  # noqa: N802 (logging's spelling)
        self.asked += 1
        return level > logging.INFO

    def info(self, *args):
        raise AssertionError(f"logger.info called with INFO off: {args}")


def test_step_times_cost_one_level_check_when_info_is_off(monkeypatch):
    quiet = QuietLogger()
    monkeypatch.setattr(model_service.model_service, "logger", quiet)
    assert RecordingService().inference({}) == {"predicted_label": "1"}
    assert quiet.asked == 1


def test_metrics_cleared_between_requests_are_registered_again():
    service = RecordingService()
    service.inference({})
    MetricsManager.metrics.clear()
    service.inference({})
    assert MetricsManager.metrics["fake_LatencyOverall"].count == 1
    assert MetricsManager.metrics["fake_LatencyPreprocess"].count == 1


def test_each_request_updates_the_models_latency_metrics():
    MetricsManager.metrics.clear()
    service = RecordingService()
    service.inference({})
    service.inference({})
    names = {f"fake_{n}" for n in ("LatencyPreprocess", "LatencyInference", "LatencyPostprocess", "LatencyOverall")}
    assert set(MetricsManager.metrics) == names
    assert all(MetricsManager.metrics[n].count == 2 for n in names)
    overall = MetricsManager.metrics["fake_LatencyOverall"].value
    parts = sum(MetricsManager.metrics[f"fake_{n}"].value for n in ("LatencyPreprocess", "LatencyInference",
                                                                    "LatencyPostprocess"))
    assert overall == pytest.approx(parts)


@pytest.mark.parametrize("error", [KeyError("images"), TypeError("not an image"), ValueError("boom")],
                         ids=["KeyError", "TypeError", "ValueError"])
@pytest.mark.parametrize("step, hook", [("pre", "_preprocess"), ("inf", "_inference"), ("post", "_postprocess")])
def test_hook_errors_become_step_failures_naming_the_step(step, hook, error):
    service = RecordingService(fail_in=step, error=error)
    with pytest.raises(StepFailed) as caught:
        service.inference({})
    assert caught.value.__cause__ is error
    assert (caught.value.step, caught.value.service) == (hook, "RecordingService")
    assert str(caught.value).startswith(f"RecordingService.{hook} raised {type(error).__name__}: ")


@pytest.mark.parametrize("error, status", [
    (KeyError("images"), 400),
    (TypeError("not an image"), 400),
    (ValueError("boom"), 500),
    (RuntimeError("boom"), 500),
], ids=["KeyError", "TypeError", "ValueError", "RuntimeError"])
def test_the_sdk_edge_maps_step_failures_to_inference_failed(error, status):
    with pytest.raises(StepFailed) as caught:
        RecordingService(fail_in="inf", error=error).inference({})
    failed = inference_failed(caught.value)
    assert failed.http_status == status
    assert failed.message == str(caught.value)
    assert failed.to_dict() == {"erno": "MR.0105", "msg": "Recognition failed", "words_result": {}}


def test_a_nested_step_failure_passes_through_unchanged():
    inner = StepFailed("Inner._preprocess raised KeyError: x", "_preprocess", "Inner")
    with pytest.raises(StepFailed) as caught:
        RecordingService(fail_in="pre", error=inner).inference({})
    assert caught.value is inner


def test_key_error_message_has_no_extra_quotes():
    with pytest.raises(StepFailed, match=r"KeyError: no 'images' field$"):
        RecordingService(fail_in="pre", error=KeyError("no 'images' field")).inference({})


def runtime_sources():
    return sorted(p for name in RUNTIME_PACKAGES for p in (RUNTIME_DIR.parent / name).rglob("*.py"))


@pytest.mark.parametrize("path", runtime_sources(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_runtime_imports_nothing_from_the_sdk(path):
    tree = ast.parse(path.read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level]
    assert [name for name in imported if name.split(".")[0] == "modelarts_mnist"] == []


BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def evaluated_annotations(tree):
    """Annotations Python evaluates when the module runs: signatures, and module/class-level variables."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            arguments += [a for a in (node.args.vararg, node.args.kwarg) if a]
            yield from (a.annotation for a in arguments if a.annotation)
            if node.returns:
                yield node.returns
        elif isinstance(node, (ast.Module, ast.ClassDef)):
            yield from (n.annotation for n in node.body if isinstance(n, ast.AnnAssign))


def newer_than_36(annotation):
    """PEP 585 (list[int]) and PEP 604 (int | None) spellings, which 3.6-3.9 cannot evaluate."""
    for node in ast.walk(annotation):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in BUILTIN_GENERICS:
            return True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return True
    return False


@pytest.mark.parametrize("path", runtime_sources(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_runtime_is_python_36_code(path):
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 6))  # walrus, f"{x=}", positional-only: SyntaxError
    futures = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "__future__"
               for a in n.names]
    assert "annotations" not in futures
    assert [ast.unparse(a) for a in evaluated_annotations(tree) if newer_than_36(a)] == []
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "dataclasses" not in modules  # Python 3.7+
    assert ".default_rng(" not in source  # numpy 1.17+
