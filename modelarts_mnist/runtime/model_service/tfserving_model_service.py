"""TfServingBaseService: the TensorFlow base class, serving the SavedModel in-process."""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .lite_path import build_lite_path
from .model_service import SingleNodeService
from .saved_model import DEFAULT_SIGNATURE, TensorInfo, load_saved_model, pick_signature, serving_signature

__all__ = ["TfServingBaseService", "fits", "pick_signature", "DEFAULT_SIGNATURE"]


class TfServingBaseService(SingleNodeService):
    """Loads the SavedModel in model_path; _inference maps {input: ndarray} to {output: lists}."""

    def __init__(self, model_name: str, model_path: str):
        super().__init__(model_name, model_path)
        self.model = self._load_model()
        self.signature = serving_signature(self.model, str(model_path))  # raises SignatureError
        self.signature_name = self.signature.name
        # Same scores, checked at load time, a fraction of the per-call cost; None: call the signature.
        self.lite_path = (build_lite_path(self.signature, model_path=str(model_path))
                          if self.signature.eager else None)

    def _load_model(self) -> Any:
        """Load the SavedModel (tests override this with a fake holding `.signatures`)."""
        return load_saved_model(str(self.model_path))

    def _inference(self, data: Dict[str, Any]) -> Dict[str, list]:
        feeds = {name: self._feed(name, data) for name in self.signature.inputs}
        outputs = self.lite_path(feeds) if self.lite_path else self.signature(feeds)
        return {name: np.asarray(value).tolist() for name, value in outputs.items()}

    def _feed(self, name: str, data: Dict[str, Any]) -> np.ndarray:
        """One input as an array of the signature's dtype and shape (TypeError/KeyError -> 400)."""
        if not isinstance(data, dict) or name not in data:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise KeyError("model input {!r} missing from _preprocess output (got {})".format(name, got))
        info = self.signature.inputs[name]
        try:
            array = np.asarray(data[name], dtype=info.numpy_dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError("model input {!r}: cannot convert to {}: {}".format(name, info.dtype, exc)) from exc
        if not fits(array.shape, info.shape):
            raise TypeError("model input {!r} has shape {}, signature {!r} expects {}".format(
                name, list(array.shape), self.signature_name, info.shape))
        return array

    def describe_signature(self) -> Dict[str, Any]:
        """The served signature: name, and dtype/shape of each input and output."""
        return {"name": self.signature_name,
                "inputs": {n: describe_info(i) for n, i in self.signature.inputs.items()},
                "outputs": {n: describe_info(i) for n, i in self.signature.outputs.items()}}


def fits(shape: Sequence[int], dims: Optional[List[Optional[int]]]) -> bool:
    """TensorShape.is_compatible_with for a concrete shape: same rank, equal where the spec is known."""
    if dims is None:  # unknown rank: anything fits
        return True
    return len(shape) == len(dims) and all(d is None or d == n for d, n in zip(dims, shape))


def describe_info(info: TensorInfo) -> Dict[str, Any]:
    """A tensor as {"dtype": "float32", "shape": [None, 784]}."""
    return {"dtype": info.dtype, "shape": info.shape}
