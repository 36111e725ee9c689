"""runtimes: the engine table, interpreters, and environments built whole or not at all."""
from __future__ import annotations

import sys

import pytest

from modelarts_mnist import runtimes
from modelarts_mnist.errors import EngineError
from modelarts_mnist.runtimes import Runtime, find_interpreter, find_runtime, install, installed, requirements_of

HERE = "%d.%d" % sys.version_info[:2]


@pytest.fixture()
def runtimes_root(tmp_path, monkeypatch):
    monkeypatch.setenv(runtimes.RUNTIMES_ENV, str(tmp_path / "runtimes"))
    return tmp_path / "runtimes"


def tiny_runtime(*packages: str) -> Runtime:
    """A runtime of this interpreter's Python with small packages: fast to build for tests."""
    return Runtime("test-engine", HERE, "0", packages, "inference")


@pytest.mark.parametrize("name, expected", [
    ("tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64", ("3.7", "2.1.0")),
    ("tf2.1-python3.7", ("3.7", "2.1.0")),
    ("tf1.13-python3.6-gpu", ("3.6", "1.13.2")),
    ("tf1.13-python3.7-cpu", ("3.7", "1.13.2")),
    ("tensorflow_2.6.0-cuda_11.2-py_3.7-ubuntu_18.04-x86_64", ("3.7", "2.6.5")),
    ("tensorflow_1.15.5-cuda_11.4-py_3.8-ubuntu_20.04-x86_64", ("3.8", "1.15.5")),  # built on 3.7: see the note
], ids=["tf2.1", "tf2.1-alias", "gpu-maps-to-cpu", "tf1.13-py37", "tf2.6", "tf1.15"])
def test_find_runtime_by_name_or_alias(name, expected):
    runtime = find_runtime(name)
    assert (runtime.python, runtime.tensorflow) == expected


def test_unknown_runtime_lists_the_known_ones():
    with pytest.raises(EngineError, match="unknown runtime 'tf9.9'.*tf1.13-python3.7-cpu"):
        find_runtime("tf9.9")


def test_every_name_and_alias_is_unique():
    names = [n for r in runtimes.RUNTIMES for n in (r.name, *r.aliases)]
    assert len(names) == len(set(names))


def test_explicit_interpreter_of_the_wrong_version_is_refused():
    with pytest.raises(EngineError, match=f"is Python {HERE}, this runtime needs Python 2.5"):
        find_interpreter("2.5", sys.executable)


def test_missing_python_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    with pytest.raises(EngineError, match=r"no Python 2\.5 interpreter found.*pyenv install 2\.5.*--python"):
        find_interpreter("2.5")


def test_pyenv_interpreters_are_found():
    assert find_interpreter("3.7").endswith("/bin/python") or "python3.7" in find_interpreter("3.7")


@pytest.mark.parametrize("package, expected", [
    ({"package_name": "numpy", "package_version": "1.16.0", "restraint": "ATLEAST"}, "numpy>=1.16.0"),
    ({"package_name": "Pillow", "package_version": "8.4.0", "restraint": "EXACT"}, "Pillow==8.4.0"),
    ({"package_name": "six", "package_version": "2", "restraint": "ATMOST"}, "six<=2"),
    ({"package_name": "h5py", "package_version": "", "restraint": ""}, "h5py"),
], ids=["atleast", "exact", "atmost", "any"])
def test_requirements_of_config_dependencies(package, expected):
    config = {"dependencies": [{"installer": "pip", "packages": [package]}]}
    assert requirements_of(config) == [expected]


def test_build_installs_stamps_and_adds_model_service(runtimes_root):
    environment = install(tiny_runtime("six==1.16.0"))
    assert installed(tiny_runtime("six==1.16.0")) == environment
    assert installed(tiny_runtime("six==1.15.0")) is None  # other pins: not this environment
    record = runtimes.describe(environment)
    assert record["requirements"] == ["six==1.16.0"] and record["python"].startswith(HERE)
    site = runtimes.site_packages(environment.path)
    assert (site / "model_service" / "tfserving_model_service.py").is_file()
    assert (site / "six.py").is_file()
    assert not [p.name for p in runtimes_root.iterdir() if ".partial" in p.name]


def test_a_package_that_cannot_install_is_named_and_leaves_nothing(runtimes_root):
    with pytest.raises(EngineError, match="could not install no-such-package-modelarts-mnist==1.0"):
        install(tiny_runtime("no-such-package-modelarts-mnist==1.0"))
    assert installed(tiny_runtime("no-such-package-modelarts-mnist==1.0")) is None
    assert [p.name for p in runtimes_root.iterdir() if not p.name.endswith(".lock")] == []


def test_an_interrupted_build_is_never_used(runtimes_root):
    def interrupt(line):
        if line.startswith("[2/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        install(tiny_runtime("six==1.16.0"), echo=interrupt)
    assert installed(tiny_runtime("six==1.16.0")) is None
    assert [p.name for p in runtimes_root.iterdir() if not p.name.endswith(".lock")] == []


def test_model_service_copy_is_refreshed_when_the_sdk_changes(runtimes_root):
    environment = install(tiny_runtime())
    marker = runtimes.site_packages(environment.path) / ".model_service.digest"
    marker.write_text("stale")
    (runtimes.site_packages(environment.path) / "model_service" / "model_service.py").write_text("broken")
    install(tiny_runtime())
    assert marker.read_text() == runtimes.shim_digest()
    copied = runtimes.site_packages(environment.path) / "model_service" / "model_service.py"
    assert copied.read_text() == (runtimes.shim_source() / "model_service" / "model_service.py").read_text()


def test_dependencies_go_in_a_layer_that_sees_the_base(runtimes_root):
    base = install(tiny_runtime("six==1.16.0"))
    layered = runtimes.with_dependencies(base, ["six>=1.0", "idna==3.4"])
    assert layered.path != base.path
    import subprocess
    out = subprocess.run([str(layered.python), "-c", "import six, idna, model_service; print(six.__file__, idna.__version__)"],
                         capture_output=True, text=True, check=True).stdout
    assert str(base.path) in out and "3.4" in out  # six from the base, idna in the layer
    assert runtimes.with_dependencies(base, []) == base


def test_new_pins_rebuild_the_environment_in_place(runtimes_root):
    install(tiny_runtime("six==1.16.0"))
    environment = install(tiny_runtime("six==1.15.0"))
    assert runtimes.describe(environment)["requirements"] == ["six==1.15.0"]
    assert sorted(p.name for p in runtimes_root.iterdir() if not p.name.endswith(".lock")) == ["test-engine"]
