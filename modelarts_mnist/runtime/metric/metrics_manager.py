"""MetricsManager: the runtime's per-model metrics, which real inference code reads and updates.

Real packages that override inference() copy the platform's pattern:

    if self.model_name + '_LatencyPreprocess' in MetricsManager.metrics:
        MetricsManager.metrics[self.model_name + '_LatencyPreprocess'].update(pre_time_in_ms)

so `MetricsManager.metrics` is a class-level dict of Metric objects with update(value). The
runtime registers a model's four latency metrics (milliseconds) when its service is built and
model_service's SingleNodeService.inference updates them on every request.
"""
import threading
from typing import Dict

__all__ = ["LATENCY_METRICS", "Metric", "MetricsManager"]

LATENCY_METRICS = ("LatencyPreprocess", "LatencyInference", "LatencyPostprocess", "LatencyOverall")


class Metric:
    """One metric: the last value recorded, how many and their sum (thread-safe updates)."""

    def __init__(self, name: str, model_name: str = None, unit: str = "ms"):
        self.name = name
        self.model_name = model_name
        self.unit = unit
        self.value = None
        self.count = 0
        self.total = 0.0
        self._lock = threading.Lock()

    def update(self, value: float) -> None:
        """Record one observation."""
        value = float(value)
        with self._lock:
            self.value = value
            self.count += 1
            self.total += value

    @property
    def mean(self) -> float:
        """The mean of every value recorded (0.0 before the first)."""
        return self.total / self.count if self.count else 0.0

    def __repr__(self) -> str:
        return "Metric({!r}, model_name={!r}, value={!r}, count={})".format(
            self.name, self.model_name, self.value, self.count)


class MetricsManager:
    """The registry of metrics, keyed '<model_name>_<metric>' as on ModelArts."""

    metrics = {}  # type: Dict[str, Metric]

    @staticmethod
    def register_model(model_name: str) -> None:
        """Create the model's latency metrics, keeping those that already exist."""
        for name in LATENCY_METRICS:
            MetricsManager.metrics.setdefault("{}_{}".format(model_name, name), Metric(name, model_name))
