"""ModelArts model-service runtime shim (local twin of the platform's `model_service` package).

Installed by setup.py as the top-level package `model_service`, so user inference code can write
`from model_service.tfserving_model_service import TfServingBaseService` here and on ModelArts alike.
It stands on its own (stdlib and numpy; TensorFlow when a model is loaded) and runs on Python 3.6
and later, so a ModelArts engine's own interpreter can run it:

- model_service, tfserving_model_service: the base classes user code extends (ModelService, the
  root; SingleNodeService; TfServingBaseService);
- log: `model_service.log.getLogger`, as some real packages import it;
- saved_model, lite_path: loading and calling the SavedModel (TF 1 Session or TF 2 eager);
- discovery: finding and building the one service class of customize_service.py;
- worker, wire: the model side of a package served from another process;
- errors: the runtime's own exceptions (their HTTP meaning is the host's business).

Two sibling top-level packages ship with it (modelarts_mnist/runtime/log and .../metric): `log`
(`log.getLogger(__name__)`) and `metric.metrics_manager.MetricsManager`, which the platform's
image also provides and whose latencies SingleNodeService.inference records.
"""
