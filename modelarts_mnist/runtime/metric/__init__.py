"""ModelArts' top-level `metric` package: `metric.metrics_manager.MetricsManager` (per-model latencies)."""
