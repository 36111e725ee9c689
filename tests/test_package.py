"""build_package and check_package: a good package, and one broken copy per rule."""
from __future__ import annotations

import json
import shutil

import pytest

from modelarts_mnist import package
from modelarts_mnist.artifacts import INFERENCE_CODE, artifact_path
from modelarts_mnist.errors import PackageError
from modelarts_mnist.package import build_package, check_imports, check_package, distribution_modules
from modelarts_mnist.package_rules import check_config


def test_build_package_copies_code_and_writes_measured_metrics(tiny_package, tiny_version, repo_root):
    assert tiny_package.name == "model"
    code = (tiny_package / "customize_service.py").read_text()
    assert code == (repo_root / "model" / "customize_service.py").read_text()
    config = json.loads((tiny_package / "config.json").read_text())
    measured = json.loads((tiny_version / "metrics.json").read_text())
    assert config["metrics"] == {k: pytest.approx(measured[k]) for k in ("f1", "accuracy", "precision", "recall")}
    assert config["apis"] == json.loads((repo_root / "config.json").read_text())["apis"]
    assert not [p.name for p in tiny_package.iterdir() if p.name.startswith(".")]


def test_build_package_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(PackageError, match="no saved_model.pb"):
        build_package(tmp_path)


def test_good_package_has_no_problems_including_smoke(tiny_package):
    assert check_package(tiny_package) == []


def test_missing_folder_is_one_problem(tmp_path):
    [problem] = check_package(tmp_path / "nope")
    assert problem.message == "not a folder"


# --- one broken copy per rule ------------------------------------------------------------------

def edit_config(change):
    def apply(model_dir):
        path = model_dir / "config.json"
        config = json.loads(path.read_text())
        change(config)
        path.write_text(json.dumps(config, indent=2))
    return apply


def remove(relative):
    def apply(model_dir):
        for path in model_dir.glob(relative):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return apply


def edit_code(old, new):
    def apply(model_dir):
        path = model_dir / "customize_service.py"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
    return apply


def api(config):
    return config["apis"][0]


def code_line(text, after=0):
    """Where `text` starts in the shipped customize_service.py, so edits to that file do not move the expectations."""
    code = artifact_path(INFERENCE_CODE).read_text()
    line = code[:code.index(text)].count("\n") + 1 + after
    return f"customize_service.py:{line}"


BROKEN = {
    "no-saved-model": (remove("saved_model.pb"), "saved_model.pb", "required file missing"),
    "no-variables-index": (remove("variables/variables.index"), "variables/variables.index", "missing"),
    "no-variables-data": (remove("variables/variables.data-*"), "variables/variables.data-*", "missing"),
    "no-config": (remove("config.json"), "config.json", "required file missing"),
    "no-code": (remove("customize_service.py"), "customize_service.py", "required file missing"),
    "bad-json": (lambda d: (d / "config.json").write_text('{\n  "model_type": ,\n}'), "config.json:2:17",
                 "invalid JSON"),
    "not-object": (lambda d: (d / "config.json").write_text("[]"), "config.json $", "must be a JSON object"),
    "no-algorithm": (edit_config(lambda c: c.pop("model_algorithm")), "config.json $.model_algorithm",
                     "required field missing"),
    "algorithm-digit": (edit_config(lambda c: c.update(model_algorithm="1class")), "config.json $.model_algorithm",
                        "must start with a letter"),
    "algorithm-long": (edit_config(lambda c: c.update(model_algorithm="a" * 37)), "config.json $.model_algorithm",
                       "at most 36"),
    "algorithm-chars": (edit_config(lambda c: c.update(model_algorithm="a<b")), "config.json $.model_algorithm",
                        "none of"),
    "algorithm-chinese": (edit_config(lambda c: c.update(model_algorithm="a分类")), "config.json $.model_algorithm",
                          "ASCII"),
    "no-type": (edit_config(lambda c: c.pop("model_type")), "config.json $.model_type", "required field missing"),
    "bad-type": (edit_config(lambda c: c.update(model_type="Keras")), "config.json $.model_type",
                 "'Keras' is not one of"),
    "runtime-empty": (edit_config(lambda c: c.update(runtime="")), "config.json $.runtime", "non-empty string"),
    "metrics-not-object": (edit_config(lambda c: c.update(metrics=[])), "config.json $.metrics", "must be an object"),
    "metric-string": (edit_config(lambda c: c["metrics"].update(accuracy="0.9")), "config.json $.metrics.accuracy",
                      "must be a number"),
    "apis-not-array": (edit_config(lambda c: c.update(apis={})), "config.json $.apis", "must be an array"),
    "two-apis": (edit_config(lambda c: c["apis"].append(dict(api(c)))), "config.json $.apis",
                 "may declare only one"),
    "url": (edit_config(lambda c: api(c).update(url="/predict")), "config.json $.apis[0].url", 'must be "/"'),
    "method": (edit_config(lambda c: api(c).update(method="get")), "config.json $.apis[0].method", "POST only"),
    "protocol": (edit_config(lambda c: api(c).update(protocol="ftp")), "config.json $.apis[0].protocol",
                 "http or https"),
    "content-type": (edit_config(lambda c: api(c)["request"].update({"Content-type": "text/plain"})),
                     "config.json $.apis[0].request.Content-type", "'text/plain' is not one of"),
    "schema-type": (edit_config(lambda c: api(c)["request"]["data"]["properties"]["images"].update(type="image")),
                    "config.json $.apis[0].request.data.properties.images.type", "'image' is not one of"),
    "schema-required": (edit_config(lambda c: api(c)["response"]["data"].update(required="scores")),
                        "config.json $.apis[0].response.data.required", "array of field names"),
    "installer": (edit_config(lambda c: c["dependencies"][0].update(installer="conda")),
                  "config.json $.dependencies[0].installer", 'only "pip"'),
    "no-packages": (edit_config(lambda c: c["dependencies"][0].pop("packages")),
                    "config.json $.dependencies[0].packages", "required array"),
    "package-name": (edit_config(lambda c: c["dependencies"][0]["packages"][0].update(package_name="numpy>=1")),
                     "config.json $.dependencies[0].packages[0].package_name", "none of"),
    "restraint": (edit_config(lambda c: c["dependencies"][0]["packages"][0].update(restraint="ABOUT")),
                  "config.json $.dependencies[0].packages[0].restraint", "EXACT, ATLEAST or ATMOST"),
    "foreign-import": (edit_code("import numpy as np\n", "import numpy as np\nimport modelarts_mnist\n"),
                       code_line("import numpy as np\n", after=1), "imports 'modelarts_mnist'"),
    "no-service-class": (edit_code("class MnistService(TfServingBaseService)", "class MnistService(object)"),
                         "customize_service.py", "found none"),
    "two-service-classes": (lambda d: (d / "customize_service.py").open("a").write(
        "\n\nclass Other(TfServingBaseService):\n    pass\n"), "customize_service.py", "found MnistService, Other"),
    "syntax-error": (edit_code('INPUT_NAME = "images"', 'INPUT_NAME = "images'), code_line('INPUT_NAME = "images"'),
                     "SyntaxError"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_copy_gives_exactly_its_problem(tiny_package, tmp_path, case):
    breaker, location, text = BROKEN[case]
    model_dir = shutil.copytree(tiny_package, tmp_path / "model")
    breaker(model_dir)
    problems = check_package(model_dir, smoke=False)
    assert [p.location for p in problems] == [location], problems
    assert text in problems[0].message


@pytest.mark.parametrize("breaker, text", [
    (edit_code('return answers[0] if len(answers) == 1 else answers', 'return {"label": np.int64(1)}'),
     "the answer is not JSON-encodable (Object of type int64 is not JSON serializable)"),
    (edit_code("in list_images(data):", "in list_images({}):"),
     "failed: MnistService._preprocess raised KeyError"),
], ids=["numpy-int64-answer", "raises"])
def test_smoke_request_problems_one_per_declared_request_kind(tiny_package, tmp_path, breaker, text):
    model_dir = shutil.copytree(tiny_package, tmp_path / "model")
    breaker(model_dir)
    problems = check_package(model_dir, live=False)
    assert [p.location for p in problems] == ["customize_service.py"] * 2
    assert "(multipart/form-data with digit.png)" in problems[0].message
    assert "(multipart/form-data with photo.jpg)" in problems[1].message
    assert all(text in p.message for p in problems)


def test_any_json_answer_is_accepted(tiny_package, tmp_path):
    model_dir = shutil.copytree(tiny_package, tmp_path / "model")
    edit_code('return answers[0] if len(answers) == 1 else answers', 'return {"mnist_result": 7}')(model_dir)
    assert check_package(model_dir, live=False) == []


def test_image_model_needs_image_fields():
    config = {"model_algorithm": "a", "model_type": "Image", "dependencies": []}
    locations = sorted(p.location for p in check_config(config))
    assert locations == ["config.json $.dependencies", "config.json $.health", "config.json $.swr_location"]


def test_documented_misspellings_and_lower_case_are_accepted(repo_root):
    config = json.loads((repo_root / "config.json").read_text())
    entry = config["apis"][0]
    entry["procotol"] = entry.pop("protocol")
    entry["method"] = "post"
    entry["request"]["Content-type"] = "applicaton/json"
    scores = entry["response"]["data"]["properties"]["scores"]
    scores["item"] = scores.pop("items")
    entry["response"]["Content-type"] = "multipart/form-data"
    config["dependencies"][0]["packages"].append({"package_name": "h5py", "package_version": "", "restraint": ""})
    assert check_config(config) == []


def test_a_misspelled_nested_schema_is_still_checked():
    config = {"model_algorithm": "a", "model_type": "TensorFlow",
              "apis": [{"response": {"data": {"type": "array", "item": {"type": "text"}}}}]}
    [problem] = check_config(config)
    assert problem.location == "config.json $.apis[0].response.data.item.type"


# --- what ModelArts' import does not refuse ------------------------------------------------------

def test_request_field_names_are_not_compared_with_signature_inputs(tiny_package, tmp_path):
    model_dir = shutil.copytree(tiny_package, tmp_path / "model")
    edit_config(lambda c: api(c)["request"]["data"].update(properties={"csv_file": {"type": "file"}}))(model_dir)
    assert check_package(model_dir, smoke=False) == []


def test_a_list_type_in_a_response_schema_is_accepted(tiny_package, tmp_path):
    model_dir = shutil.copytree(tiny_package, tmp_path / "model")
    edit_config(lambda c: api(c)["response"]["data"]["properties"]["scores"].update(type="list"))(model_dir)
    assert check_package(model_dir, smoke=False) == []


def service_importing(tmp_path, imports, packages=()):
    """A folder whose customize_service.py imports `imports`, its config.json declaring `packages`."""
    (tmp_path / "customize_service.py").write_text("".join(f"import {name}\n" for name in imports))
    declared = [{"package_name": name, "package_version": "", "restraint": ""} for name in packages]
    return tmp_path, {"dependencies": [{"installer": "pip", "packages": declared}]}


def test_runtime_modules_are_importable(tmp_path):
    folder, config = service_importing(tmp_path, ["log", "metric.metrics_manager", "model_service.log", "moxing"])
    assert check_imports(folder, config) == []


def test_an_undeclared_third_party_import_is_a_problem(tmp_path):
    folder, config = service_importing(tmp_path, ["skimage"])
    [problem] = check_imports(folder, config)
    assert problem.location == "customize_service.py:1" and "imports 'skimage'" in problem.message


@pytest.mark.parametrize("declared, module", [
    ("scikit-image", "skimage"), ("Scikit_Image", "skimage"), ("opencv-python", "cv2"),
    ("OpenCV-Python-Headless", "cv2"), ("pillow", "PIL"), ("scikit.learn", "sklearn"), ("lightgbm", "lightgbm"),
], ids=str)
def test_a_declared_distribution_allows_its_import_name_from_the_table(tmp_path, monkeypatch, declared, module):
    monkeypatch.setattr(package, "installed_top_level", lambda name: set())  # as if none were installed here
    folder, config = service_importing(tmp_path, [module], [declared])
    assert check_imports(folder, config) == []


def test_an_installed_distribution_names_its_modules_from_its_metadata():
    assert distribution_modules("pyyaml") >= {"yaml"}  # top_level.txt
    assert distribution_modules("Flask") == {"flask"}
    assert "PIL" in distribution_modules("PILLOW")


def test_a_sibling_folder_without_init_is_importable(tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "lenet.py").write_text("")
    folder, config = service_importing(tmp_path, ["nets.lenet"])
    assert check_imports(folder, config) == []


@pytest.mark.parametrize("fail_at", [1, 2], ids=["code", "config"])
def test_a_full_disk_leaves_the_package_as_it_was(tiny_package, tmp_path, fail_at):
    import errno

    from modelarts_mnist.files import write_bytes

    version = tmp_path / "V0001"
    shutil.copytree(tiny_package.parent, version)
    model = version / "model"
    (model / "customize_service.py").write_text("# the old code\n")
    before = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    calls = []

    def full_disk(path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == fail_at:
            write_bytes(path, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_bytes(path, data)
    with pytest.raises(PackageError, match=f"cannot write the package in {model}: No space left on device"):
        build_package(version, write=full_disk)
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == before
