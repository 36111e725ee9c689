"""modelarts-mnist: Huawei Cloud ModelArts' MNIST workflow, run locally."""
from .errors import (
    DataError,
    InferenceFailed,
    InvalidInput,
    MnistSdkError,
    ModelNotReady,
    PackageError,
    PayloadTooLarge,
    StorageError,
    TrainingError,
    Unauthorized,
)

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "InferenceFailed",
    "InvalidInput",
    "MnistSdkError",
    "ModelNotReady",
    "PackageError",
    "PayloadTooLarge",
    "StorageError",
    "TrainingError",
    "Unauthorized",
    "__version__",
]
