"""Write the op registry of the TensorFlow this interpreter imports, as gzip JSON data for `check --runtime`.

Run it with the Python of an engine environment (it must stay runnable on Python 3.6 and TensorFlow 1.13):

    /path/to/env/bin/python scripts/dump_op_registry.py [--output modelarts_mnist/data/op_registry]

It writes tf-<version>.json.gz: a header (TensorFlow, Python and protobuf versions, how it was made) and, for
every op registered in TensorFlow's C++ registry after `import tensorflow`, its attrs with their default values
(protobuf text of the AttrValue; null when the attr has no default, i.e. a NodeDef must set it). The header also
records whether this TensorFlow ignores a NodeDef attr its op lacks (newer versions log and go on; older refuse).
"""
import argparse
import gzip
import json
import os
import platform
import sys

FORMAT = 1
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                              "modelarts_mnist", "data", "op_registry")


def all_op_defs():
    """Every OpDef in TensorFlow's global registry (C API TF_GetAllOpList; the Python module moved in 2.2)."""
    from tensorflow.core.framework import op_def_pb2
    try:
        from tensorflow.python.client import pywrap_tf_session as c_api
    except ImportError:  # TensorFlow < 2.2
        from tensorflow.python import pywrap_tensorflow as c_api
    buffer = c_api.TF_GetAllOpList()
    try:
        op_list = op_def_pb2.OpList()
        op_list.ParseFromString(c_api.TF_GetBuffer(buffer))
    finally:
        c_api.TF_DeleteBuffer(buffer)
    return op_list.op


def attr_defaults(op_def):
    """{attr name: default AttrValue as one-line protobuf text, or None when the attr is required}."""
    from google.protobuf import text_format
    return {attr.name: (text_format.MessageToString(attr.default_value, as_one_line=True)
                        if attr.HasField("default_value") else None)
            for attr in op_def.attr}


def ignores_unknown_attrs():
    """Whether this TensorFlow imports a NodeDef whose attr its op lacks (newer ones log and ignore it)."""
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2
    graph_def = graph_pb2.GraphDef()
    node = graph_def.node.add(name="probe", op="NoOp")
    node.attr["attr_from_a_newer_tensorflow"].s = b"x"
    v1 = tf.compat.v1 if hasattr(tf, "compat") and hasattr(tf.compat, "v1") else tf
    with tf.Graph().as_default():
        try:
            v1.import_graph_def(graph_def, name="")
        except ValueError:
            return False
    return True


def registry_document(command):
    """The whole registry with its header, as a JSON-ready dict."""
    import google.protobuf
    import numpy
    import tensorflow as tf
    version = getattr(tf, "version", tf)  # tf.version exists from 1.14 on
    git = version.GIT_VERSION
    ops = {op.name: attr_defaults(op) for op in all_op_defs()}
    return {
        "format": FORMAT,
        "tensorflow": version.VERSION,
        "tensorflow_git": git[2:-1] if git.startswith("b'") else git,  # 1.13 says "b'v1.13.2-...'"
        "python": platform.python_version(),
        "protobuf": google.protobuf.__version__,
        "numpy": numpy.__version__,
        "generated_by": "scripts/dump_op_registry.py: TF_GetAllOpList after `import tensorflow`",
        "command": command,
        "op_count": len(ops),
        "ignores_unknown_attrs": ignores_unknown_attrs(),
        "ops": ops,
    }


def write_registry(document, output_dir):
    """Write tf-<version>.json.gz (byte-identical for the same registry: gzip mtime 0, sorted keys)."""
    if not os.path.isdir(output_dir):
        os.makedirs(output_dir)
    path = os.path.join(output_dir, "tf-%s.json.gz" % document["tensorflow"])
    text = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
    temp = path + ".tmp"
    with open(temp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as out:
            out.write(text)
    os.replace(temp, path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.normpath(DEFAULT_OUTPUT),
                        help="folder for tf-<version>.json.gz (default: the SDK's data/op_registry)")
    args = parser.parse_args(argv)
    document = registry_document("%s scripts/dump_op_registry.py" % sys.executable)
    path = write_registry(document, args.output)
    sys.stdout.write("%s: %d ops of TensorFlow %s\n" % (path, document["op_count"], document["tensorflow"]))


if __name__ == "__main__":
    main()
