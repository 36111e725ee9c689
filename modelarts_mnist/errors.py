"""The SDK's one exception tree; each error carries its HTTP status and ModelArts error code.

    MnistSdkError (500, MR.0105)
    ├── DataError             bad IDX files or data sources        (400, MR.0101)
    ├── InvalidInput          a request the service cannot use     (400, MR.0101)
    ├── PayloadTooLarge       body over the 12 MB limit            (413, APIG.0201)
    ├── Unauthorized          missing or wrong X-Auth-Token        (401, APIG.0301)
    ├── MalformedHttp         a request HTTP itself refuses: syntax, sizes, timeouts (400/408/414/431/501, MR.0101)
    ├── HostNotAllowed        a Host a loopback-bound service does not answer to (403, APIG.0101)
    ├── RequestOverBudget     the app call ran past the service's time budget (504, ModelArts.4503)
    ├── ModelNotReady         model still loading                  (503, ModelArts.4503)
    ├── InferenceFailed       user code raised                     (500, MR.0105)
    ├── PackageError          a model folder that fails the checks (400, ModelArts.0101)
    ├── TrainingError         a training job that failed           (500, ModelArts.2001)
    ├── StorageError          local, OBS or S3 transfer problems   (502, ModelArts.3001)
    ├── EngineError           a runtime environment that cannot be built or used (500, ModelArts.0203)
    └── ServeError            the online service could not start  (500, MR.0105)
"""
from __future__ import annotations

from typing import Any


class MnistSdkError(Exception):
    """Base of every error the SDK raises on purpose."""

    http_status = 500
    error_code = "MR.0105"

    def __init__(self, message: str, *, http_status: int | None = None, error_code: str | None = None):
        super().__init__(message)
        self.message = message
        if http_status is not None:
            self.http_status = http_status
        if error_code is not None:
            self.error_code = error_code

    def to_dict(self) -> dict[str, Any]:
        """The JSON body ModelArts' gateway uses for this kind of error."""
        return {"error_code": self.error_code, "error_msg": self.message}


class DataError(MnistSdkError):
    """A data file or data source is missing or malformed."""

    http_status = 400
    error_code = "MR.0101"


class InvalidInput(MnistSdkError):
    """A prediction request the service cannot turn into model input."""

    http_status = 400
    error_code = "MR.0101"

    def to_dict(self) -> dict[str, Any]:
        # ModelArts' fixed text; the specific reason travels in the X-Error-Detail header.
        return {"erno": self.error_code, "msg": "The input parameter is invalid", "words_result": {}}


class PayloadTooLarge(MnistSdkError):
    """A request body over the service's size limit."""

    http_status = 413
    error_code = "APIG.0201"


class Unauthorized(MnistSdkError):
    """A request without the service's X-Auth-Token."""

    http_status = 401
    error_code = "APIG.0301"


class MalformedHttp(MnistSdkError):
    """A request refused at the HTTP layer, before the app sees it (the status says which rule)."""

    http_status = 400
    error_code = "MR.0101"


class HostNotAllowed(MnistSdkError):
    """A Host header naming another machine, sent to a service bound to loopback (DNS rebinding)."""

    http_status = 403
    error_code = "APIG.0101"


class RequestOverBudget(MnistSdkError):
    """The model did not answer within the service's time budget (the gateway's timeout answer)."""

    http_status = 504
    error_code = "ModelArts.4503"


class ModelNotReady(MnistSdkError):
    """The model is still loading."""

    http_status = 503
    error_code = "ModelArts.4503"


class InferenceFailed(MnistSdkError):
    """User inference code raised; the body is ModelArts' MR.0105 answer."""

    http_status = 500
    error_code = "MR.0105"

    def to_dict(self) -> dict[str, Any]:
        return {"erno": self.error_code, "msg": "Recognition failed", "words_result": {}}


class PackageError(MnistSdkError):
    """A model folder that cannot be imported as a ModelArts model."""

    http_status = 400
    error_code = "ModelArts.0101"


class TrainingError(MnistSdkError):
    """A training job that could not start or did not succeed."""

    http_status = 500
    error_code = "ModelArts.2001"


class StorageError(MnistSdkError):
    """A local, OBS or S3 read or write that failed."""

    http_status = 502
    error_code = "ModelArts.3001"


class ServeError(MnistSdkError):
    """The online service could not start (e.g. its port is taken)."""


class EngineError(MnistSdkError):
    """A ModelArts runtime environment that cannot be found, built or started here."""

    error_code = "ModelArts.0203"
