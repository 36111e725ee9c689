"""ModelArts' service base classes: the _preprocess -> _inference -> _postprocess template.

    ModelService                 the root (real code names it; BaseService is its old name here)
    └── SingleNodeService        runs the three steps, logs and records their times
        └── TfServingBaseService (tfserving_model_service.py)
"""
import functools
import logging
import time
from typing import Any, List, Sequence, Tuple

from metric.metrics_manager import MetricsManager

from .errors import StepFailed

logger = logging.getLogger(__name__)

STEPS = ("_preprocess", "_inference", "_postprocess")
# Each step's log wording and latency metric, as the platform's runtime names them.
STEP_LOG = {"_preprocess": "preprocess time", "_inference": "infer time", "_postprocess": "postprocess time"}
STEP_METRIC = {"_preprocess": "LatencyPreprocess", "_inference": "LatencyInference",
               "_postprocess": "LatencyPostprocess"}


class ModelService:
    """A model service built once as cls(model_name, model_path) by the runtime."""

    def __init__(self, model_name: str, model_path: str):
        self.model_name = model_name
        self.model_path = model_path

    def inference(self, data: Any) -> Any:
        """Answer one request; subclasses define how."""
        raise NotImplementedError

    def ping(self) -> None:
        """Kept for compatibility with the platform runtime, which does nothing here."""

    def signature(self) -> None:
        """Kept for compatibility with the platform runtime, which does nothing here."""


BaseService = ModelService  # the name this runtime used first; existing code keeps working


class SingleNodeService(ModelService):
    """Runs _preprocess, _inference and _postprocess in turn, logging and recording each step's time."""

    def inference(self, data: Any) -> Any:
        """Run the three hooks on one request's data and return the answer.

        Raises:
            StepFailed: a hook raised; the hook's exception is its __cause__.
        """
        verbose = logger.isEnabledFor(logging.INFO)  # asked once a request: with INFO off, no log call at all
        times = []  # type: List[float]
        start = time.perf_counter()
        for step in STEPS:
            data = self._run_step(step, data)
            end = time.perf_counter()
            times.append((end - start) * 1e3)
            start = end
            if verbose:
                logger.info("%s: %.3fms", STEP_LOG[step], times[-1])
        if verbose:
            logger.info("latency: %.3fms", sum(times))
        record_latencies(getattr(self, "model_name", None), times)
        return data

    def _run_step(self, step: str, data: Any) -> Any:
        try:
            result = getattr(self, step)(data)
        except StepFailed:
            raise  # a nested service already said which step failed
        except Exception as exc:
            name = type(self).__name__
            message = "{}.{} raised {}: {}".format(name, step, type(exc).__name__, describe(exc))
            raise StepFailed(message, step, name) from exc
        return result

    def _preprocess(self, data: Any) -> Any:
        return data

    def _inference(self, data: Any) -> Any:
        return data

    def _postprocess(self, data: Any) -> Any:
        return data


def record_latencies(model_name: Any, times: Sequence[float]) -> None:
    """Update the model's MetricsManager latencies (ms, one per step of STEPS), registering them on first use."""
    if not isinstance(model_name, str):
        return  # a service that never set model_name has no metrics to key them by
    metrics = MetricsManager.metrics
    keys = metric_keys(model_name)
    if keys[-1] not in metrics:
        MetricsManager.register_model(model_name)
    for key, milliseconds in zip(keys, times):
        metrics[key].update(milliseconds)
    metrics[keys[-1]].update(sum(times))


@functools.lru_cache(maxsize=64)
def metric_keys(model_name: str) -> Tuple[str, ...]:
    """The MetricsManager keys of the model's step latencies (in STEPS order), then of its overall latency."""
    return tuple("{}_{}".format(model_name, STEP_METRIC[step]) for step in STEPS) + (model_name + "_LatencyOverall",)


def describe(exc: BaseException) -> str:
    """The exception's message on one line (KeyError's str() adds quotes; drop them)."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
