"""Load a SavedModel and call its serving signature, the TF 2 way or the TF 1 (TF Serving) way.

Two loaders, one description:
- "v2": tf.saved_model.load and the signature's concrete function (eager; the fast local default);
- "v1": tf.compat.v1.saved_model.loader.load into a Session, tag "serve", then session.run with the
  SignatureDef's tensor names as feeds and fetches. That is the path TF Serving (ModelArts) takes,
  and the only one TF 1.x has.
Both describe the signature the same plain way (TensorInfo per input and output).
"""
import collections
import logging
import os
from typing import Any, Dict, Mapping

import numpy as np

from .errors import SignatureError

logger = logging.getLogger(__name__)

LOADER_ENV = "MODELARTS_MNIST_SAVEDMODEL_LOADER"  # "v1" or "v2"; read only by saved_model_loader()
LOADERS = ("v1", "v2")
SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"

# dtype: TensorFlow's name ("float32"); shape: a list (None for unknown sizes), or None for unknown rank;
# numpy_dtype: what inputs are converted to before they are fed.
TensorInfo = collections.namedtuple("TensorInfo", "dtype shape numpy_dtype")


def saved_model_loader(tf_version: str) -> str:
    """'v1' or 'v2': the environment's choice (default v2); TensorFlow 1.x can only do v1."""
    choice = os.environ.get(LOADER_ENV, "").strip().lower() or "v2"
    if choice not in LOADERS:
        raise ValueError("{}={!r}: expected one of {}".format(LOADER_ENV, choice, ", ".join(LOADERS)))
    if tf_version.startswith("1."):
        return "v1"  # no eager loader before TensorFlow 2
    return choice


def load_saved_model(path: str) -> Any:
    """The SavedModel at path, loaded by the chosen loader (a SessionModel for v1)."""
    import tensorflow as tf  # heavy: only services that really load a model pay for it

    loader = saved_model_loader(tf.__version__)
    logger.info("loading %s with the %s SavedModel loader (TensorFlow %s)", path, loader, tf.__version__)
    if loader == "v1":
        return SessionModel(path)
    return tf.saved_model.load(path)


class SessionModel:
    """A SavedModel loaded the TF 1 way into a graph and session of its own, as TF Serving does."""

    def __init__(self, path: str):
        import tensorflow as tf

        v1 = tf.compat.v1
        self.graph = tf.Graph()
        self.session = v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta_graph = v1.saved_model.loader.load(self.session, [SERVE_TAG], path)
        self.signatures = self.meta_graph.signature_def  # name -> SignatureDef, like .signatures in TF 2


def serving_signature(model: Any, model_path: str) -> Any:
    """The signature ModelArts serves from a loaded model, as a SessionSignature or EagerSignature."""
    name = pick_signature(model.signatures, model_path)
    if isinstance(model, SessionModel):
        return SessionSignature(model, name)
    return EagerSignature(model, name, model_path)


class SessionSignature:
    """A SignatureDef run through session.run: {input: array} -> {output: array}."""

    eager = False

    def __init__(self, model: SessionModel, name: str):
        definition = model.signatures[name]
        self.name, self.session = name, model.session
        self.inputs = {key: describe_tensor_info(info) for key, info in definition.inputs.items()}
        self.outputs = {key: describe_tensor_info(info) for key, info in definition.outputs.items()}
        self._feeds = {key: info.name for key, info in definition.inputs.items()}
        self._fetches = {key: info.name for key, info in definition.outputs.items()}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The outputs for one set of named inputs (Session.run is thread-safe)."""
        return self.session.run(self._fetches, {self._feeds[key]: value for key, value in feeds.items()})


class EagerSignature:
    """A TF 2 signature function: {input: array} -> {output: array}."""

    eager = True

    def __init__(self, model: Any, name: str, model_path: str):
        import tensorflow as tf

        self.model, self.name = model, name
        self.function = model.signatures[name]
        self.inputs = eager_inputs(self.function, model_path, name)
        self.outputs = {key: describe_tensor(t) for key, t in self.function.structured_outputs.items()}
        self._to_tensor = tf.convert_to_tensor

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The outputs for one set of named inputs."""
        # TF 2.1's functions pruned from a TF 1 graph accept tensors only, not arrays.
        tensors = {key: self._to_tensor(value) for key, value in feeds.items()}
        return {key: value.numpy() for key, value in self.function(**tensors).items()}


def eager_inputs(function: Any, model_path: str, name: str) -> Dict[str, TensorInfo]:
    """The signature function's named inputs."""
    signature = function.structured_input_signature
    if signature is not None:
        return {key: describe_tensor(spec) for key, spec in signature[1].items()}
    # TF 2.1 keeps no input signature on functions loaded from a TF 1 SavedModel: ask the SignatureDef.
    definition = read_signature_def(model_path, name)
    return {key: describe_tensor_info(info) for key, info in definition.inputs.items()}


def read_signature_def(model_path: str, name: str) -> Any:
    """The SignatureDef `name` of the serve-tagged graph in model_path/saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(model_path, "saved_model.pb"), "rb") as file:
        saved.ParseFromString(file.read())
    graphs = [g for g in saved.meta_graphs if SERVE_TAG in g.meta_info_def.tags] or list(saved.meta_graphs)
    return graphs[0].signature_def[name]


def describe_tensor(tensor: Any) -> TensorInfo:
    """A TensorSpec's (or Tensor's) dtype and shape."""
    shape = None if tensor.shape.rank is None else tensor.shape.as_list()
    return TensorInfo(tensor.dtype.name, shape, tensor.dtype.as_numpy_dtype)


def describe_tensor_info(info: Any) -> TensorInfo:
    """A SignatureDef TensorInfo's dtype and shape (size -1 is an unknown size)."""
    import tensorflow as tf

    dtype = tf.as_dtype(info.dtype)
    dims = info.tensor_shape
    shape = None if dims.unknown_rank else [d.size if d.size >= 0 else None for d in dims.dim]
    return TensorInfo(dtype.name, shape, dtype.as_numpy_dtype)


def pick_signature(signatures: Any, model_path: str) -> str:
    """The only signature if there is one, else serving_default (ModelArts' rule).

    Raises:
        SignatureError: several signatures and none named serving_default, or none at all.
    """
    names = sorted(name for name in signatures.keys() if not name.startswith("__"))
    if len(names) == 1:
        return names[0]
    if DEFAULT_SIGNATURE in names:
        return DEFAULT_SIGNATURE
    raise SignatureError("{}: SavedModel has signatures {}; expected exactly one or one named {!r}".format(
        model_path, names, DEFAULT_SIGNATURE))
