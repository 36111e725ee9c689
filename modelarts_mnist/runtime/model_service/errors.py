"""The runtime's own exceptions: plain classes, so the runtime needs nothing but itself.

    Exception
    ├── StepFailed          a step of inference() raised; __cause__ is what user code raised
    ├── ServingInputError   (a ValueError) _inference's feeds are not what the signature takes
    └── ServiceLoadError    the folder gives no service (import, class choice or constructor failed)
        └── SignatureError  the SavedModel has no signature ModelArts would serve

Whoever hosts the runtime decides what they mean over HTTP (the SDK maps them at its server edge).
"""


class StepFailed(Exception):
    """One of _preprocess, _inference, _postprocess raised; the original exception is __cause__."""

    def __init__(self, message, step, service=None):
        super().__init__(message)
        self.step = step          # "_preprocess", "_inference", "_postprocess" (or "inference")
        self.service = service    # the service class name, when known


class ServingInputError(ValueError):
    """TF Serving refuses the feeds: an unknown or missing input, another dtype or shape.

    A ValueError, not a KeyError/TypeError: ModelArts answers these 500 (MR.0105), since TF
    Serving's refusal reaches the runtime as a failed call, not as bad request data.
    """


class ServiceLoadError(Exception):
    """customize_service.py cannot be turned into one running service."""


class SignatureError(ServiceLoadError):
    """The SavedModel's signatures leave ModelArts no single one to serve."""
