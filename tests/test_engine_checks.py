"""engine_checks: SavedModel ops against shipped op registries, Python syntax per version, pip installability."""
from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelarts_mnist.engine_checks import (check_dependencies_installable, check_python_syntax,
                                           check_saved_model_ops, declared_requirements, load_op_registry,
                                           registry_versions)
from modelarts_mnist.errors import EngineError

ENGINE_TENSORFLOWS = ("1.13.2", "1.15.5", "2.1.0", "2.6.5")


# --- tiny SavedModels written by today's TensorFlow ------------------------------------------------------------


def save_tf2_model(folder: Path) -> Path:
    """tf.saved_model.save of a tf.Module with two variables: the way today's TensorFlow exports."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.ones([4, 2]), name="w")
            self.b = tf.Variable(tf.zeros([2]), name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def predict(self, images):
            return {"scores": tf.nn.softmax(tf.matmul(images, self.w) + self.b)}

    scorer = Scorer()
    tf.saved_model.save(scorer, str(folder), signatures={"predict_images": scorer.predict})
    return folder


def save_tf1_model(folder: Path, *, strip_default_attrs: bool = True) -> Path:
    """A tf.compat.v1 graph (VariableV2 weights, classic ops) saved with the TF 1 SavedModel builder."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        images = v1.placeholder(tf.float32, [None, 4], name="images")
        w = v1.Variable(np.ones([4, 2], np.float32), name="w", use_resource=False)
        b = v1.Variable(np.zeros([2], np.float32), name="b", use_resource=False)
        scores = tf.nn.softmax(tf.matmul(images, w) + b, name="scores")
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(folder))
            signature = v1.saved_model.predict_signature_def({"images": images}, {"scores": scores})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"predict_images": signature},
                                                 strip_default_attrs=strip_default_attrs)
            builder.save()
    return folder


@pytest.fixture(scope="module")
def tf2_model(tmp_path_factory) -> Path:
    return save_tf2_model(tmp_path_factory.mktemp("engine-checks") / "tf2")


@pytest.fixture(scope="module")
def tf1_model(tmp_path_factory) -> Path:
    return save_tf1_model(tmp_path_factory.mktemp("engine-checks") / "tf1")


def todays_tensorflow() -> str:
    import tensorflow as tf

    return tf.__version__


# --- op registries ----------------------------------------------------------------------------------------------


def test_registries_ship_for_every_engine_and_todays_tensorflow():
    shipped = registry_versions()
    assert set(ENGINE_TENSORFLOWS) <= set(shipped)
    assert load_op_registry(todays_tensorflow()).tensorflow.split(".")[:2] == todays_tensorflow().split(".")[:2]
    old, new = load_op_registry("1.13.2"), load_op_registry(shipped[-1])
    assert old.header["generated_by"].startswith("scripts/dump_op_registry.py")
    assert "DisableCopyOnRead" not in old.ops and "DisableCopyOnRead" in new.ops
    assert "debug_name" not in old.ops["VarHandleOp"] and "debug_name" in new.ops["VarHandleOp"]
    assert old.ops["VarHandleOp"]["dtype"] is None  # required: no default
    assert old.ops["VarHandleOp"]["container"] == 's: ""'


def test_registry_lookup_falls_back_to_the_same_minor_release_and_refuses_unknown_ones():
    assert load_op_registry("2.6.0").tensorflow == "2.6.5"
    assert load_op_registry("1.13.1").tensorflow == "1.13.2"
    with pytest.raises(EngineError, match="no op registry for TensorFlow 2.3"):
        load_op_registry("2.3.0")


# --- SavedModel ops and attrs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tf_version", ENGINE_TENSORFLOWS)
def test_todays_saved_model_is_refused_naming_disable_copy_on_read(tf2_model, tf_version):
    problems = check_saved_model_ops(tf2_model, tf_version)
    [op] = [p for p in problems if "DisableCopyOnRead" in p.message]  # once, however many nodes
    assert op.location == "saved_model.pb"
    assert op.message.startswith("op 'DisableCopyOnRead' (")
    assert "in function " in op.message  # found in the function library, not the graph
    assert op.message.endswith(f"is not registered in TensorFlow {tf_version}")


@pytest.mark.parametrize("tf_version", ["1.13.2", "2.1.0"])
def test_todays_saved_model_names_debug_name_where_the_engine_refuses_unknown_attrs(tf2_model, tf_version):
    [attr] = [p for p in check_saved_model_ops(tf2_model, tf_version) if "debug_name" in p.message]
    assert attr.message.startswith(f"NodeDef mentions attr 'debug_name' not in Op VarHandleOp of TensorFlow {tf_version}")
    assert "2 nodes" in attr.message  # counted, not repeated


def test_todays_saved_model_passes_todays_tensorflow(tf2_model):
    assert check_saved_model_ops(tf2_model, todays_tensorflow()) == []


@pytest.mark.parametrize("tf_version", [*ENGINE_TENSORFLOWS, "today"])
def test_tf1_style_saved_model_passes_every_engine(tf1_model, tf_version):
    version = todays_tensorflow() if tf_version == "today" else tf_version
    assert check_saved_model_ops(tf1_model, version) == []


def test_unstripped_default_attrs_are_named_with_the_fix_where_the_engine_refuses_them(tmp_path):
    model = save_tf1_model(tmp_path / "unstripped", strip_default_attrs=False)
    [grad_a] = [p for p in check_saved_model_ops(model, "2.1.0") if "'grad_a'" in p.message]
    assert "holds its default" in grad_a.message and "strip_default_attrs=True" in grad_a.message
    assert check_saved_model_ops(model, "2.6.5") == []  # 2.6 logs unknown attrs and ignores them


def test_a_required_attr_the_producer_left_out_is_named(tf1_model, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tf1_model / "saved_model.pb").read_bytes())
    [matmul] = [n for n in saved.meta_graphs[0].graph_def.node if n.op == "MatMul"]
    del matmul.attr["T"]
    (tmp_path / "saved_model.pb").write_bytes(saved.SerializeToString())
    [problem] = check_saved_model_ops(tmp_path, "1.13.2")
    assert problem.message.startswith("NodeDef lacks attr 'T', which Op MatMul of TensorFlow 1.13.2 requires")


def test_missing_or_damaged_saved_model_is_one_problem(tmp_path):
    assert [str(p) for p in check_saved_model_ops(tmp_path, "2.1.0")] == ["saved_model.pb: required file missing"]
    (tmp_path / "saved_model.pb").write_bytes(b"\xff not a protobuf")
    [problem] = check_saved_model_ops(tmp_path, "2.1.0")
    assert problem.message.startswith("not a readable SavedModel")


LOAD_IN_ENGINE = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    v1 = tf.compat.v1 if hasattr(tf, "compat") and hasattr(tf.compat, "v1") else tf
    for path in sys.argv[1:]:
        verdicts = []
        try:
            with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
                meta = v1.saved_model.loader.load(session, ["serve"], path)
                signature = meta.signature_def["predict_images"]
                session.run(signature.outputs["scores"].name, {signature.inputs["images"].name: np.ones([1, 4])})
            verdicts.append("ok")
        except Exception as exc:
            verdicts.append(str(exc).splitlines()[0])
        if tf.__version__.startswith("2."):
            try:
                tf.saved_model.load(path).signatures["predict_images"](images=tf.ones([1, 4]))
                verdicts.append("ok")
            except Exception as exc:
                verdicts.append(str(exc).splitlines()[0])
        print("VERDICTS " + " | ".join(verdicts))
""")


@pytest.mark.parametrize("engine, tf_version", [("tf21_python", "2.1.0"), ("tf113_python", "1.13.2")])
def test_static_verdicts_match_loading_on_the_real_engine(request, tf1_model, tf2_model, engine, tf_version):
    python = request.getfixturevalue(engine)
    run = subprocess.run([str(python), "-c", LOAD_IN_ENGINE, str(tf2_model), str(tf1_model)],
                         capture_output=True, text=True, timeout=600)
    lines = [line[len("VERDICTS "):] for line in run.stdout.splitlines() if line.startswith("VERDICTS ")]
    assert len(lines) == 2, run.stderr[-2000:]
    refused, loaded = lines
    assert loaded.split(" | ") == ["ok"] * len(loaded.split(" | "))
    assert check_saved_model_ops(tf1_model, tf_version) == []
    assert "ok" not in refused.split(" | ")
    static = " ".join(p.message for p in check_saved_model_ops(tf2_model, tf_version))
    for name in ("debug_name", "DisableCopyOnRead"):
        assert name in static
    assert "NodeDef mentions attr 'debug_name' not in Op<name=VarHandleOp" in refused  # the v1 (TF Serving) path
    if tf_version.startswith("2."):
        assert "Op type not registered 'DisableCopyOnRead'" in refused  # the TF 2 loader


# --- Python syntax ----------------------------------------------------------------------------------------------


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_future_annotations_is_a_problem_on_36_and_fine_on_37(tmp_path):
    path = write(tmp_path, "customize_service.py", '"""Doc."""\nfrom __future__ import annotations\n')
    [problem] = check_python_syntax(path, "3.6")
    assert problem.location == "customize_service.py:2"
    assert "`from __future__ import annotations` needs Python 3.7" in problem.message
    assert "Python 3.6" in problem.message
    assert check_python_syntax(path, "3.7") == []


def test_unknown_future_feature_is_a_problem_everywhere(tmp_path):
    path = write(tmp_path, "x.py", "from __future__ import braces_for_all\n")
    [problem] = check_python_syntax(path, "3.11")
    assert problem.message.startswith("future feature 'braces_for_all' is not defined")


# (code, line of the problem, the oldest Python that accepts it); each was checked on real 3.6, 3.7 and 3.8.
NEWER_SYNTAX = {
    "walrus": ("x = 1\nif (n := x):\n    pass\n", 2, "3.8"),
    "positional-only": ("def f(a, /, b):\n    pass\n", 1, "3.8"),
    "f-string =": ("x = 1\ny = f'{x=}'\n", 2, "3.8"),
    "star return": ("def f(a, *rest):\n    return a, *rest\n", 2, "3.8"),
    "PEP 614 decorator": ("d = [id]\n@d[0]\ndef f():\n    pass\n", 2, "3.9"),
    "list[int] annotation": ("def f(x: list[int]):\n    pass\n", 1, "3.9"),
    "class-level tuple[...]": ("class C:\n    z: tuple[int, ...] = ()\n", 2, "3.9"),
    "X | None return": ("def f() -> int | None:\n    pass\n", 1, "3.10"),
}


@pytest.mark.parametrize("code, line, oldest", NEWER_SYNTAX.values(), ids=NEWER_SYNTAX.keys())
def test_newer_syntax_is_named_with_file_and_line(tmp_path, code, line, oldest):
    path = write(tmp_path, "helper.py", code)
    previous = "3.%d" % (int(oldest.split(".")[1]) - 1)
    problems = check_python_syntax(path, previous)
    assert [p.location for p in problems] == [f"helper.py:{line}"]
    assert f"Python {previous}" in problems[0].message
    assert check_python_syntax(path, oldest) == []


def test_annotations_that_are_never_evaluated_are_fine(tmp_path):
    path = write(tmp_path, "x.py", """
        def f(x: "list[int]") -> "int | None":
            local: list[int] = []
            return None
    """)
    assert check_python_syntax(path, "3.6") == []


def test_a_folder_checks_every_sibling_py_file_but_not_hidden_ones(tmp_path):
    write(tmp_path, "customize_service.py", "import helper\n")
    write(tmp_path, "pkg/helper.py", "\n\nif (n := 1):\n    pass\n")
    write(tmp_path, ".ipynb_checkpoints/old.py", "if (n := 1):\n    pass\n")
    assert [p.location for p in check_python_syntax(tmp_path, "3.7")] == ["pkg/helper.py:3"]


def test_the_inference_code_parses_on_the_oldest_runtime_python(repo_root):
    assert check_python_syntax(repo_root / "model", "3.6") == []


def test_python_2_cannot_be_checked(tmp_path):
    with pytest.raises(EngineError, match="only Python 3"):
        check_python_syntax(write(tmp_path, "x.py", "x = 1\n"), "2.7")


# --- pip dependencies -------------------------------------------------------------------------------------------


def config_with(*packages: dict) -> dict:
    return {"dependencies": [{"installer": "pip", "packages": list(packages)}]}


PILLOW_91 = {"package_name": "Pillow", "package_version": "9.1.0", "restraint": "ATLEAST"}
# termcolor 2.x requires Python 3.7; its newest release for 3.6, 1.1.0, is a pure-Python sdist.
TERMCOLOR_2 = {"package_name": "termcolor", "package_version": "2.0.0", "restraint": "ATLEAST"}


def test_restraints_become_pip_operators():
    config = config_with({"package_name": "numpy", "package_version": "1.16.6", "restraint": "EXACT"}, PILLOW_91,
                         {"package_name": "six", "package_version": "2", "restraint": "ATMOST"},
                         {"package_name": "termcolor", "package_version": "", "restraint": ""}, {"bad": 1})
    assert [r for _, r in declared_requirements(config)] == ["numpy==1.16.6", "Pillow>=9.1.0", "six<=2", "termcolor"]


def test_pillow_91_is_not_installable_on_36_but_is_on_37(tmp_path):
    config = config_with(PILLOW_91, TERMCOLOR_2)
    problems = check_dependencies_installable(config, "3.6", cache_dir=tmp_path)
    assert [str(p) for p in problems] == [
        "config.json $.dependencies[0].packages[0]: Pillow>=9.1.0 is not installable on Python 3.6 "
        "(newest there is 8.4.0)",
        "config.json $.dependencies[0].packages[1]: termcolor>=2.0.0 is not installable on Python 3.6 "
        "(newest there is 1.1.0)",  # the sdist counts; a local wheel mirror does not
    ]
    assert check_dependencies_installable(config, "3.7", cache_dir=tmp_path) == []
    cached = json.loads((tmp_path / "pip-verdicts.json").read_text())
    assert cached["3.6 Pillow>=9.1.0"]["ok"] is False and cached["3.7 Pillow>=9.1.0"]["ok"] is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_cached_verdicts_answer_without_the_index(tmp_path, monkeypatch):
    (tmp_path / "pip-verdicts.json").write_text(json.dumps(
        {"3.6 Pillow>=9.1.0": {"ok": False, "newest": "8.4.0", "checked": 4e9}}))  # fresh until 2096
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    [problem] = check_dependencies_installable(config_with(PILLOW_91), "3.6", cache_dir=tmp_path)
    assert "newest there is 8.4.0" in problem.message


def test_an_unreachable_index_is_said_once_without_crashing(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    problems = check_dependencies_installable(config_with(PILLOW_91, TERMCOLOR_2), "3.6", cache_dir=tmp_path)
    assert [p.location for p in problems] == ["config.json $.dependencies"]
    assert "could not reach the package index" in problems[0].message
    assert "Connection refused" in problems[0].message
    assert not (tmp_path / "pip-verdicts.json").exists()  # failures are not cached
