"""ModelArts model-service runtime shim (local twin of the platform's `model_service` package).

Installed by setup.py as the top-level package `model_service`, so user inference code can write
`from model_service.tfserving_model_service import TfServingBaseService` here and on ModelArts alike.
"""
