"""load_service: find and build the one user service class in customize_service.py.

The rule lives in the runtime (model_service.discovery, plain ServiceLoadError); the SDK's loader
only maps its errors to PackageError.
"""
from __future__ import annotations

import textwrap
import time

import pytest
from model_service import discovery
from model_service.errors import ServiceLoadError, SignatureError
from model_service.model_service import SingleNodeService

from modelarts_mnist.errors import PackageError
from modelarts_mnist.loader import find_service_class, load_service

HEADER = "from model_service.model_service import SingleNodeService\n"


def write_service(folder, body, header=HEADER):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customize_service.py").write_text(header + textwrap.dedent(body))
    return folder


def test_builds_the_single_leaf_with_name_and_path(tmp_path):
    folder = write_service(tmp_path, """
        class Echo(SingleNodeService):
            def _postprocess(self, data):
                return {"echo": data}
    """)
    service = load_service(folder, "digits")
    assert type(service).__name__ == "Echo" and isinstance(service, SingleNodeService)
    assert (service.model_name, service.model_path) == ("digits", str(folder))
    assert service.inference(1) == {"echo": 1}


def test_picks_the_leaf_below_a_user_base_class(tmp_path):
    folder = write_service(tmp_path, """
        class Base(SingleNodeService):
            pass
        class Leaf(Base):
            pass
    """)
    assert find_service_class(folder).__name__ == "Leaf"


def test_helper_modules_beside_the_file_are_importable(tmp_path):
    (tmp_path / "labels_helper.py").write_text("LABELS = list('0123456789')\n")
    folder = write_service(tmp_path, """
        from labels_helper import LABELS
        class WithHelper(SingleNodeService):
            def _postprocess(self, data):
                return LABELS[data]
    """)
    assert load_service(folder).inference(7) == "7"


def test_two_folders_load_independent_classes(tmp_path):
    first = write_service(tmp_path / "a", "class S(SingleNodeService):\n    tag = 'a'\n")
    second = write_service(tmp_path / "b", "class S(SingleNodeService):\n    tag = 'b'\n")
    assert (load_service(first).tag, load_service(second).tag) == ("a", "b")


@pytest.mark.parametrize("body, text", [
    ("X = 1\n", r"derived from ModelService. \(found none\)"),
    ("class A(SingleNodeService): pass\nclass B(SingleNodeService): pass\n", r"\(found A, B\)"),
    ("class A(SingleNodeService)\n    pass\n", r"customize_service.py:2: cannot import: SyntaxError"),
    ("\nimport modelarts_mnist_missing\n", r"customize_service.py:3: cannot import: ModuleNotFoundError"),
], ids=["no-class", "two-leaves", "syntax-error", "missing-module"])
def test_bad_service_files_raise_package_error(tmp_path, body, text):
    folder = write_service(tmp_path, body)
    with pytest.raises(PackageError, match=text):
        load_service(folder)


def test_runtime_base_classes_alone_do_not_count(tmp_path):
    header = HEADER + "from model_service.tfserving_model_service import TfServingBaseService\n"
    folder = write_service(tmp_path, "", header=header)
    with pytest.raises(PackageError, match="found none"):
        find_service_class(folder)


TF_HEADER = HEADER + "from model_service.tfserving_model_service import TfServingBaseService\n"


def tensorflow_model(folder):
    """Mark the folder as a TensorFlow model, as config.json's model_type does."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "TensorFlow"}')
    return folder


def test_a_tensorflow_model_refuses_a_single_node_service(tmp_path):
    folder = write_service(tensorflow_model(tmp_path), "class Echo(SingleNodeService):\n    pass\n")
    with pytest.raises(PackageError, match=r"There should be one user defined service derived from ModelService\. "
                                           r"\(found none; Echo does not derive from TfServingBaseService"):
        find_service_class(folder)


def test_a_tensorflow_model_picks_the_tf_serving_leaf_beside_other_classes(tmp_path):
    folder = write_service(tensorflow_model(tmp_path), """
        class Helper(SingleNodeService):
            pass
        class Base(TfServingBaseService):
            pass
        class Digits(Base):
            pass
    """, header=TF_HEADER)
    assert find_service_class(folder).__name__ == "Digits"


def test_a_tensorflow_model_refuses_two_tf_serving_leaves(tmp_path):
    folder = write_service(tensorflow_model(tmp_path), """
        class A(TfServingBaseService):
            pass
        class B(TfServingBaseService):
            pass
    """, header=TF_HEADER)
    with pytest.raises(PackageError, match=r"\(found A, B\)$"):
        find_service_class(folder)


def test_other_model_types_accept_any_model_service_leaf(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "Image"}')
    folder = write_service(tmp_path, "class Echo(SingleNodeService):\n    pass\n")
    assert find_service_class(folder).__name__ == "Echo"


BACKGROUND = """
    import threading
    import time
    class Slow(SingleNodeService):
        def __init__(self, model_name, model_path):
            super().__init__(model_name, model_path)
            self.ready = False
            threading.Thread(target=self.load, name="loader").start()
        def load(self):
            time.sleep(SECONDS)
            self.ready = True
"""


def test_a_background_load_is_waited_for_when_asked(tmp_path):
    folder = write_service(tmp_path, BACKGROUND.replace("SECONDS", "0.3"))
    assert load_service(folder).ready is False  # the default: no wait, as serving on ModelArts
    assert load_service(folder, wait_for_loading=5).ready is True


def test_the_wait_for_a_background_load_is_bounded(tmp_path, caplog):
    folder = write_service(tmp_path, BACKGROUND.replace("SECONDS", "1.5"))
    started = time.monotonic()
    assert load_service(folder, wait_for_loading=0.2).ready is False
    assert time.monotonic() - started < 1.0
    assert "thread 'loader' still runs after 0 s" in caplog.text


def test_constructor_failure_is_a_package_error(tmp_path):
    folder = write_service(tmp_path, """
        class Broken(SingleNodeService):
            def __init__(self, model_name, model_path):
                raise OSError("no saved_model.pb")
    """)
    with pytest.raises(PackageError, match=r"Broken\('mnist', \.\.\.\) raised OSError: no saved_model.pb"):
        load_service(folder)


def test_missing_file_is_a_package_error(tmp_path):
    with pytest.raises(PackageError, match="customize_service.py: file not found"):
        load_service(tmp_path)


def test_the_runtime_raises_its_own_error_with_the_cause(tmp_path):
    folder = write_service(tmp_path, """
        class Broken(SingleNodeService):
            def __init__(self, model_name, model_path):
                raise OSError("no saved_model.pb")
    """)
    with pytest.raises(ServiceLoadError, match=r"customize_service.py:5: Broken\('m', \.\.\.\) raised OSError") as caught:
        discovery.load_service(str(folder), "m")
    assert isinstance(caught.value.__cause__, OSError)


def test_a_signature_error_keeps_its_own_message(tmp_path):
    folder = write_service(tmp_path, """
        from model_service.errors import SignatureError
        class NoSignature(SingleNodeService):
            def __init__(self, model_name, model_path):
                raise SignatureError(model_path + ": SavedModel has signatures ['a', 'b']")
    """)
    with pytest.raises(PackageError, match=r": SavedModel has signatures \['a', 'b'\]$") as caught:
        load_service(folder)
    assert isinstance(caught.value.__cause__, SignatureError)


def test_a_syntax_error_in_a_helper_names_no_line_of_the_service_file(tmp_path):
    (tmp_path / "broken_helper.py").write_text("\n\n\ndef f(:\n")
    folder = write_service(tmp_path, "import broken_helper\n")
    with pytest.raises(PackageError, match=r"customize_service.py:2: cannot import: SyntaxError"):
        load_service(folder)
