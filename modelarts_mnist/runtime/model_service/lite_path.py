"""A faster way to run a one-input, one-output signature: TensorFlow Lite (XNNPACK), checked at load time.

Calling a SavedModel signature costs 0.4-1 ms of TensorFlow overhead per call, whatever the batch;
the same graph converted to TFLite runs a 28x28 digit in ~0.15 ms. The converted model is used only
after it gave the signature's outputs to within TOLERANCE on reference inputs; otherwise the
service keeps calling the signature. Set MODELARTS_MNIST_LITE=0 to turn it off. Only the eager
(TF 2 loader) signature can take it; the v1 Session path, and TensorFlow 1.x, never do.
"""
import fcntl
import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5  # largest absolute difference allowed between the two paths' outputs
REFERENCE_BATCHES = (1, 7, 64)
SWITCH_ENV = "MODELARTS_MNIST_LITE"
CACHE_ENV = "MODELARTS_MNIST_CACHE"  # shared with the OBS mirror; converted models go in its lite/
FLOAT_TYPES = ("float16", "bfloat16", "float32", "float64")


class LitePath:
    """Runs a converted signature on a pool of interpreters (one is not thread-safe; each call takes one).

    A pool rather than one per thread: the interpreter warmed up at load serves the first real
    request too, whichever thread answers it.
    """

    def __init__(self, flatbuffer: bytes, input_name: str, output_name: str):
        self.flatbuffer = flatbuffer
        self.input_name, self.output_name = input_name, output_name
        self._idle = []  # type: List[Runner]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """{output: array} for {input: array}, like the signature (the output is a copy)."""
        try:
            runner = self._idle.pop()  # atomic under the GIL: no lock needed
        except IndexError:
            runner = Runner(new_interpreter(self.flatbuffer))
        try:
            return {self.output_name: runner.run(feeds[self.input_name])}
        finally:
            self._idle.append(runner)


class Runner:
    """One interpreter and the input shape it is allocated for."""

    def __init__(self, interpreter: Any):
        self.interpreter = interpreter
        self.entry = interpreter.get_input_details()[0]["index"]
        self.exit = interpreter.get_output_details()[0]["index"]
        self.shape = None  # type: Optional[Tuple[int, ...]]

    def run(self, array: np.ndarray) -> np.ndarray:
        """The output for one input array; reallocates only when the batch size changes."""
        if self.shape != array.shape:
            self.interpreter.resize_tensor_input(self.entry, array.shape, strict=True)
            self.interpreter.allocate_tensors()
            self.shape = array.shape
        self.interpreter.set_tensor(self.entry, array)
        self.interpreter.invoke()  # releases the GIL while it runs
        return self.interpreter.get_tensor(self.exit)


def new_interpreter(flatbuffer: bytes) -> Any:
    """A single-threaded TFLite interpreter (one per worker thread; workers share the cores)."""
    import tensorflow as tf

    with warnings.catch_warnings():  # TF 2.21 announces the move to ai_edge_litert on every creation
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)


def build_lite_path(signature: Any, *, converter: Optional[Callable[[Any, Callable], bytes]] = None,
                    model_path: Optional[str] = None) -> Optional[LitePath]:
    """A checked LitePath for an EagerSignature, or None (then the signature itself is used)."""
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return None
    reason = unsupported(signature.inputs, signature.outputs)
    if reason:
        logger.info("TFLite path not used: %s", reason)
        return None
    try:
        flatbuffer = cached_conversion(model_path, lambda: (converter or convert)(signature.model, signature.function))
        lite = LitePath(flatbuffer, next(iter(signature.inputs)), next(iter(signature.outputs)))
        difference = largest_difference(lite, signature)
    except Exception as exc:  # converter and interpreter raise many types; the signature still works
        logger.info("TFLite path not used: conversion failed: %s", exc)
        return None
    if not difference <= TOLERANCE:
        logger.warning("TFLite path not used: outputs differ from the signature by %.3g", difference)
        return None
    logger.info("TFLite path in use (largest difference from the signature %.3g)", difference)
    return lite


def unsupported(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> str:
    """Why a signature (TensorInfo per input and output) cannot take the lite path ('' when it can)."""
    if len(inputs) != 1 or len(outputs) != 1:
        return "signature has several inputs or outputs"
    info = next(iter(inputs.values()))
    if info.dtype not in FLOAT_TYPES or info.shape is None or None in info.shape[1:]:
        return "input is not a float tensor of fixed shape after the batch axis"
    return ""


def convert(model: Any, predict_fn: Callable) -> bytes:
    """The signature as a TFLite flatbuffer (float32, builtin ops only)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([predict_fn], model)
    return converter.convert()


def cached_conversion(model_path: Optional[str], make: Callable[[], bytes]) -> bytes:
    """make() once per SavedModel content: later loads (and sibling workers, which wait) read the file.

    The cache only saves the ~1 s conversion; every load still checks the result against the signature.
    """
    key = saved_model_key(Path(model_path)) if model_path else None
    if key is None:
        return make()
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "modelarts-mnist") / "lite"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key}.tflite"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers starting together: one converts, the others wait
        if target.is_file():
            return target.read_bytes()
        flatbuffer = make()
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(flatbuffer)
        partial.replace(target)  # never a half-written model under the final name
        return flatbuffer


def saved_model_key(model_path: Path) -> Optional[str]:
    """A digest of the SavedModel's graph and variables and the TF version; None if it is not on disk."""
    import tensorflow as tf

    graph = model_path / "saved_model.pb"
    if not graph.is_file():
        return None
    digest = hashlib.sha256(tf.__version__.encode())
    for path in [graph] + sorted((model_path / "variables").glob("*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def largest_difference(lite: LitePath, signature: Any) -> float:
    """Max |lite - signature| over reference batches: zeros, 0-1 and 0-255 uniform noise."""
    (name, info), = signature.inputs.items()
    rng = np.random.RandomState(0)  # numpy 1.16 has no default_rng
    worst = 0.0
    for batch in REFERENCE_BATCHES:
        for scale in (0.0, 1.0, 255.0):
            feed = (rng.random_sample([batch] + info.shape[1:]) * scale).astype(info.numpy_dtype)
            expected = next(iter(signature({name: feed}).values()))
            got = next(iter(lite({name: feed}).values()))
            difference = float(np.max(np.abs(expected.astype(np.float64) - got)))
            if np.isnan(difference):  # max() would silently skip a NaN
                return float("inf")
            worst = max(worst, difference)
    return worst
