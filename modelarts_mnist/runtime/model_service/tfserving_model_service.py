"""TfServingBaseService: the TensorFlow base class, serving the SavedModel in-process."""
from __future__ import annotations

from typing import Any

import numpy as np

from modelarts_mnist.errors import PackageError

from .lite_path import build_lite_path
from .model_service import SingleNodeService

DEFAULT_SIGNATURE = "serving_default"


class TfServingBaseService(SingleNodeService):
    """Loads the SavedModel in model_path; _inference maps {input: ndarray} to {output: lists}."""

    def __init__(self, model_name: str, model_path: str):
        super().__init__(model_name, model_path)
        self.model = self._load_model()
        self.signature_name = pick_signature(self.model.signatures, model_path)
        self.predict_fn = self.model.signatures[self.signature_name]
        self.input_specs = dict(self.predict_fn.structured_input_signature[1])
        self.output_specs = dict(self.predict_fn.structured_outputs)
        # Plain dtypes and shapes: TensorShape's own check costs more per request than the model's I/O.
        self._feed_specs = {name: (spec.dtype.as_numpy_dtype, spec.dtype.name,
                                   None if spec.shape.rank is None else spec.shape.as_list())
                            for name, spec in self.input_specs.items()}
        # Same scores, checked at load time, a fraction of the per-call cost; None: call the signature.
        self.lite_path = build_lite_path(self.model, self.predict_fn, self.input_specs, self.output_specs,
                                         model_path=str(model_path))

    def _load_model(self) -> Any:
        """Load the SavedModel (tests override this with a fake holding `.signatures`)."""
        import tensorflow as tf  # heavy: only services that really load a model pay for it

        return tf.saved_model.load(str(self.model_path))

    def _inference(self, data: dict[str, Any]) -> dict[str, list]:
        feeds = {name: self._feed(name, data) for name in self.input_specs}
        outputs = self.lite_path(feeds) if self.lite_path else self.predict_fn(**feeds)
        return {name: np.asarray(value).tolist() for name, value in outputs.items()}

    def _feed(self, name: str, data: dict[str, Any]) -> np.ndarray:
        """One input as an array of the signature's dtype and shape (TypeError/KeyError -> 400)."""
        if not isinstance(data, dict) or name not in data:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise KeyError(f"model input {name!r} missing from _preprocess output (got {got})")
        dtype, dtype_name, dims = self._feed_specs[name]
        try:
            array = np.asarray(data[name], dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"model input {name!r}: cannot convert to {dtype_name}: {exc}") from exc
        if not fits(array.shape, dims):
            raise TypeError(f"model input {name!r} has shape {list(array.shape)}, "
                            f"signature {self.signature_name!r} expects {dims}")
        return array

    def describe_signature(self) -> dict[str, Any]:
        """The served signature: name, and dtype/shape of each input and output."""
        return {"name": self.signature_name,
                "inputs": {n: describe_spec(s) for n, s in self.input_specs.items()},
                "outputs": {n: describe_spec(s) for n, s in self.output_specs.items()}}


def fits(shape: tuple[int, ...], dims: list[int | None] | None) -> bool:
    """TensorShape.is_compatible_with for a concrete shape: same rank, equal where the spec is known."""
    if dims is None:  # unknown rank: anything fits
        return True
    return len(shape) == len(dims) and all(d is None or d == n for d, n in zip(dims, shape))


def pick_signature(signatures: Any, model_path: str) -> str:
    """The only signature if there is one, else serving_default (ModelArts' rule)."""
    names = [name for name in signatures.keys() if not name.startswith("__")]
    if len(names) == 1:
        return names[0]
    if DEFAULT_SIGNATURE in names:
        return DEFAULT_SIGNATURE
    raise PackageError(f"{model_path}: SavedModel has signatures {names}; "
                       f"expected exactly one or one named {DEFAULT_SIGNATURE!r}")


def describe_spec(spec: Any) -> dict[str, Any]:
    """A TensorSpec as {"dtype": "float32", "shape": [None, 784]}."""
    return {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
