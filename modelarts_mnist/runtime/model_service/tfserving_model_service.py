"""TfServingBaseService: the TensorFlow base class, serving the SavedModel in-process.

The model runs on LiteRT without TensorFlow when lite_engine allows it, else on TensorFlow; either
way self.model, self.signature and _inference behave alike (user code reading self.saved_model
gets the TensorFlow SavedModel, loaded then if it was not).
"""
import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import ServingInputError
from .lite_engine import plan_engine
from .lite_path import build_lite_path
from .model_service import SingleNodeService
from .saved_model import DEFAULT_SIGNATURE, TensorInfo, load_saved_model, pick_signature, serving_signature

__all__ = ["TfServingBaseService", "fits", "pick_signature", "DEFAULT_SIGNATURE"]

logger = logging.getLogger(__name__)


class TfServingBaseService(SingleNodeService):
    """Loads the SavedModel in model_path; _inference maps {input: ndarray} to {output: lists}."""

    def __init__(self, model_name: str, model_path: str):
        super().__init__(model_name, model_path)
        self.engine_plan = plan_engine(str(model_path), type(self))
        if self.engine_plan.litert:
            self.signature = self.engine_plan.signature
            self.lite_path = self.signature.lite
        else:
            self.saved_model = self._load_model()
            self.signature = serving_signature(self.saved_model, str(model_path))  # raises SignatureError
            # Same scores, checked at load time, a fraction of the per-call cost; None: call the signature.
            self.lite_path = (build_lite_path(self.signature, model_path=str(model_path))
                              if self.signature.eager else None)
        self.signature_name = self.signature.name
        # What the real runtime's `self.model` is (its ModelDef): packages read these attributes.
        self.model = ModelDef(model_name, str(model_path), self.signature)

    @property
    def saved_model(self) -> Any:
        """The SavedModel TensorFlow loaded; on LiteRT, loaded (TensorFlow imported) on first use."""
        if "_saved_model" not in self.__dict__ and getattr(self, "engine_plan", None) is not None:
            logger.warning("%s reads self.saved_model: loading the SavedModel with TensorFlow in this process",
                           type(self).__name__)
            self.__dict__["_saved_model"] = self._load_model()
        try:
            return self.__dict__["_saved_model"]
        except KeyError:
            raise AttributeError("saved_model") from None

    @saved_model.setter
    def saved_model(self, value: Any) -> None:
        self.__dict__["_saved_model"] = value

    def _load_model(self) -> Any:
        """Load the SavedModel (tests override this with a fake holding `.signatures`)."""
        return load_saved_model(str(self.model_path))

    def describe_engine(self) -> Dict[str, Any]:
        """Which engine runs the model and, when it is TensorFlow, why (see lite_engine)."""
        plan = getattr(self, "engine_plan", None)
        if plan is None:  # TF 1.x packages override __init__ and load their own model
            return {"serving": "tensorflow", "litert": None, "fallback_reason": "the service loads its own model"}
        return plan.describe()

    def _inference(self, data: Dict[str, Any]) -> Dict[str, list]:
        """Every key of data fed as-is to the signature, as the platform sends it to TF Serving.

        Raises:
            ServingInputError: a key is not a signature input, an input is missing, or a value has
                another dtype (numpy arrays are never cast) or shape; ModelArts answers these 500.
        """
        self._check_keys(data)
        feeds = {name: self._feed(name, data[name]) for name in self.signature.inputs}
        outputs = self.lite_path(feeds) if self.lite_path else self.signature(feeds)
        return {name: np.asarray(value).tolist() for name, value in outputs.items()}

    def _check_keys(self, data: Any) -> None:
        """The keys of data are exactly the signature's inputs (TF Serving refuses others)."""
        if isinstance(data, dict) and data.keys() == self.signature.inputs.keys():
            return  # the usual case, in one comparison; what is wrong otherwise is worked out below
        expected = sorted(self.signature.inputs)
        if not isinstance(data, dict):
            raise ServingInputError("_preprocess returned {}, not a dict of the signature's inputs {}".format(
                type(data).__name__, expected))
        unknown = sorted(str(key) for key in data if key not in self.signature.inputs)
        if unknown:
            raise ServingInputError("input tensor alias not found in signature {!r}: {}; inputs expected to be "
                                    "in the set {}".format(self.signature_name, ", ".join(unknown), expected))
        missing = [name for name in expected if name not in data]
        if missing:
            raise ServingInputError("model input {} missing from _preprocess output (got {})".format(
                ", ".join(repr(name) for name in missing), sorted(data)))

    def _feed(self, name: str, value: Any) -> np.ndarray:
        """One input as TF Serving takes it: an array of exactly the signature's dtype, of a fitting shape."""
        info = self.signature.inputs[name]
        array = as_tensor(name, value, info)
        if not fits(array.shape, info.shape):
            raise ServingInputError("model input {!r} has shape {}, signature {!r} expects {}".format(
                name, list(array.shape), self.signature_name, info.shape))
        return array

    def describe_signature(self) -> Optional[Dict[str, Any]]:
        """The served signature: name, and dtype/shape of each input and output (None if never loaded)."""
        if not hasattr(self, "signature_name"):  # TF 1.x packages override __init__ and load their own
            return None
        return {"name": self.signature_name,
                "inputs": {n: describe_info(i) for n, i in self.signature.inputs.items()},
                "outputs": {n: describe_info(i) for n, i in self.signature.outputs.items()}}


def as_tensor(name: str, value: Any, info: TensorInfo) -> np.ndarray:
    """value as the input's array: numpy values must have its dtype; Python lists and scalars take it.

    This mirrors the platform, which turns each value into a TensorProto with tf.make_tensor_proto:
    an ndarray keeps its own dtype (float64 stays float64, and TF Serving refuses it for float32),
    while a Python list of floats becomes float32.
    """
    if isinstance(value, (np.ndarray, np.generic)):
        if not same_dtype(value.dtype, info):
            raise ServingInputError("model input {!r} is {}, the signature expects {} (TF Serving does not "
                                    "cast: convert it in _preprocess)".format(name, value.dtype.name, info.dtype))
        return value if type(value) is np.ndarray else np.asarray(value)  # the usual feed, as it is
    try:
        return np.asarray(value, dtype=info.numpy_dtype)
    except (TypeError, ValueError) as exc:
        raise ServingInputError("model input {!r}: cannot convert to {}: {}".format(name, info.dtype, exc)) from exc


def same_dtype(dtype: np.dtype, info: TensorInfo) -> bool:
    """Whether an array of dtype feeds the input as it is (any bytes/str/object array feeds a string)."""
    if info.dtype == "string":
        return dtype.kind in "SUO"
    return dtype == info.numpy_dtype  # numpy compares a dtype with a scalar type as np.dtype(it): half the cost


class ModelDef:
    """The served model as the platform describes it: name, path, signature name, input and output dtypes."""

    def __init__(self, model_name: str, model_path: str, signature: Any):
        self.model_name, self.model_path = model_name, model_path
        self.model_signature = signature.name
        self.model_inputs = {name: as_dtype(info.dtype) for name, info in signature.inputs.items()}
        self.model_outputs = {name: as_dtype(info.dtype) for name, info in signature.outputs.items()}

    def __repr__(self) -> str:
        return "ModelDef({!r}, signature={!r}, inputs={}, outputs={})".format(
            self.model_name, self.model_signature, self.model_inputs, self.model_outputs)


def as_dtype(name: str) -> Any:
    """tf.as_dtype(name) when TensorFlow is loaded, else a DType standing in for it (LiteRT path)."""
    import sys

    tf = sys.modules.get("tensorflow")
    return tf.as_dtype(name) if tf is not None else DType(name)


class DType(str):
    """A dtype's name that stands in for tf.DType without TensorFlow: equal to "float32" and to tf.float32."""

    @property
    def name(self) -> str:
        return str(self)

    @property
    def as_numpy_dtype(self) -> Any:
        return np.dtype(str(self)).type

    def __repr__(self) -> str:
        return "tf.{}".format(str(self))


def fits(shape: Sequence[int], dims: Optional[List[Optional[int]]]) -> bool:
    """TensorShape.is_compatible_with for a concrete shape: same rank, equal where the spec is known."""
    if dims is None:  # unknown rank: anything fits
        return True
    if len(shape) != len(dims):
        return False
    for known, size in zip(dims, shape):  # a loop, not all(generator): this runs on every request
        if known is not None and known != size:
            return False
    return True


def describe_info(info: TensorInfo) -> Dict[str, Any]:
    """A tensor as {"dtype": "float32", "shape": [None, 784]}."""
    return {"dtype": info.dtype, "shape": info.shape}
