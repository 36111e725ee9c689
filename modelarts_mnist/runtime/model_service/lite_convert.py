"""Convert a SavedModel's serving signature to a LiteRT flatbuffer: the only step that needs TensorFlow.

    python -c "from model_service.lite_convert import main; main()" MODEL_DIR PREFIX

lite_engine.py runs this in a subprocess, so serving processes never import TensorFlow. It writes
PREFIX.tflite (the flatbuffer), PREFIX.npz (the reference inputs and the signature's outputs for
them) and, last, PREFIX.result.json: {"ok": true, "signature", "inputs", "outputs", "tensorflow"}
or {"ok": false, "reason": "..."} when the signature cannot take the LiteRT path. Exit status 0
whenever the result was written; anything else is a crash the caller reports.
"""
import json
import os
import sys
from typing import Any, Dict, List

import numpy as np

from .lite_path import convert, reference_inputs, unsupported
from .saved_model import serving_signature

NUMPY_FREE_TYPES = ("bfloat16", "string", "resource", "variant")  # no plain numpy dtype: LiteRT cannot take them


def main(argv: List[str] = None) -> None:
    """Convert MODEL_DIR's signature and write PREFIX.tflite, PREFIX.npz and PREFIX.result.json."""
    model_dir, prefix = argv or sys.argv[1:]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = convert_signature(model_dir, prefix)
    write_atomically(prefix + ".result.json", json.dumps(result).encode())


def convert_signature(model_dir: str, prefix: str) -> Dict[str, Any]:
    """The result record; writes the flatbuffer and the reference outputs when the conversion works."""
    import tensorflow as tf

    try:
        signature = serving_signature(tf.saved_model.load(model_dir), model_dir)
    except Exception as exc:  # the TF path will load it (or fail) and say why in its own words
        return refused("the SavedModel did not load with the eager loader: {}: {}".format(type(exc).__name__, exc))
    reason = unsupported(signature.inputs, signature.outputs) or numpy_types(signature)
    if reason:
        return refused(reason)
    try:
        flatbuffer = convert(signature.model, signature.function)
    except Exception as exc:  # TF-only ops, unsupported types: the converter raises many kinds
        return refused("conversion failed: {}".format(one_line(exc)))
    (name, info), = signature.inputs.items()
    inputs = reference_inputs(info)
    expected = [next(iter(signature({name: feed}).values())) for feed in inputs]
    write_atomically(prefix + ".tflite", flatbuffer)
    arrays = {"input_{}".format(i): a for i, a in enumerate(inputs)}
    arrays.update({"expected_{}".format(i): np.asarray(a) for i, a in enumerate(expected)})
    with open(prefix + ".npz.tmp", "wb") as file:
        np.savez(file, **arrays)
    os.replace(prefix + ".npz.tmp", prefix + ".npz")
    return {"ok": True, "reason": "", "signature": signature.name, "tensorflow": tf.__version__,
            "inputs": describe(signature.inputs), "outputs": describe(signature.outputs)}


def numpy_types(signature: Any) -> str:
    """Why an input or output has no numpy dtype a TensorFlow-free process could feed or read ('' if none)."""
    for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        for name, info in tensors.items():
            if info.dtype in NUMPY_FREE_TYPES:
                return "{} {!r} is {}, which LiteRT cannot take without TensorFlow".format(kind, name, info.dtype)
    return ""


def describe(tensors: Dict[str, Any]) -> Dict[str, Any]:
    """{name: {"dtype", "shape"}}: TensorInfo as JSON."""
    return {name: {"dtype": info.dtype, "shape": info.shape} for name, info in tensors.items()}


def refused(reason: str) -> Dict[str, Any]:
    """The result for a signature the LiteRT path cannot take."""
    return {"ok": False, "reason": reason}


def one_line(exc: BaseException) -> str:
    """The exception's first line (the converter's messages run to dozens of lines of MLIR)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "{}: {}".format(type(exc).__name__, lines[0][:300] if lines else "")


def write_atomically(path: str, data: bytes) -> None:
    """data under path, never half-written (a temporary file renamed over it)."""
    partial = "{}.{}.tmp".format(path, os.getpid())
    with open(partial, "wb") as file:
        file.write(data)
    os.replace(partial, path)


if __name__ == "__main__":
    main()
