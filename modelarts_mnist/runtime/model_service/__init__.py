"""ModelArts model-service runtime shim (local twin of the platform's `model_service` package)."""
