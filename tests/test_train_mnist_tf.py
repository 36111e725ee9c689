"""The boot file codes/train_mnist_tf.py: flags, data, augmentation, export, outputs, and ModelArts' engines."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from modelarts_mnist.artifacts import BOOT_FILE, artifact_path

QUICK = ["--model", "mlp", "--max_steps", "3", "--batch_size", "16"]
IDENTITY = [1, 0, 0, 0, 1, 0]
# What every TensorFlow from 1.13 on has; the export's graph (saver included) must use nothing else.
CLASSIC_OPS = {"Placeholder", "PlaceholderWithDefault", "Const", "Fill", "VarHandleOp", "VarIsInitializedOp",
               "AssignVariableOp", "ReadVariableOp", "Identity", "NoOp", "SaveV2", "RestoreV2", "Mul", "Reshape",
               "Conv2D", "BiasAdd", "Relu", "MaxPool", "MatMul", "Softmax"}


def test_unknown_arguments_are_tolerated(boot_module):
    args, unknown = boot_module.parse_args(["--data_url=d", "--train_url=t", "--num_gpus=1", "--max_steps", "9",
                                            "--init_method", "tcp://x"])
    assert (args.data_url, args.max_steps) == ("d", 9)
    assert unknown == ["--num_gpus=1", "--init_method", "tcp://x"]


@pytest.mark.parametrize("flag, value", [("--width", "0"), ("--max_steps", "-5"), ("--batch_size", "many"),
                                         ("--eval_every", "0")])
def test_sizes_below_one_are_refused_naming_the_flag(boot_module, flag, value, capsys):
    with pytest.raises(SystemExit):
        boot_module.parse_args(["--data_url=d", "--train_url=t", flag, value])
    assert f"argument {flag}: '{value}' is not a whole number of at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1", "-0.1", "nan", "a tenth"])
def test_label_smoothing_outside_zero_to_one_is_refused(boot_module, value, capsys):
    with pytest.raises(SystemExit):
        boot_module.parse_args(["--data_url=d", "--train_url=t", "--label_smoothing", value])
    assert f"argument --label_smoothing: '{value}' is not a number from 0 up to (not including) 1" \
        in capsys.readouterr().err


def test_training_loss_softens_each_target_by_the_smoothing(boot_module):
    logits = np.array([[2.0, 0.5] + [0.0] * 8, [0.0] * 9 + [3.0]], np.float32)
    labels = np.array([0, 9], np.int64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    plain = -log_p[[0, 1], labels].mean()
    soft = -((np.eye(10)[labels] * 0.9 + 0.01) * log_p).sum(1).mean()
    assert float(boot_module.training_loss(labels, logits)) == pytest.approx(plain, rel=1e-6)
    assert float(boot_module.training_loss(labels, logits, 0.1)) == pytest.approx(soft, rel=1e-6)


def test_width_multiplies_the_cnn(boot_module):
    def sizes(width):
        model = boot_module.build_model("cnn", width)
        return [layer.filters if hasattr(layer, "filters") else layer.units
                for layer in model.layers if hasattr(layer, "filters") or hasattr(layer, "units")]
    assert sizes(1) == [16, 32, 128, 10] and sizes(2) == [32, 64, 256, 10]


def test_load_mnist_reads_gz_files(boot_module, small_dataset):
    data = boot_module.load_mnist(small_dataset)
    assert data["train"][0].shape == (1000, 784) and data["test"][0].shape == (200, 784)
    assert data["train"][0].dtype == np.uint8 and set(data["test"][1]) == set(range(10))


def test_load_mnist_names_the_missing_file(boot_module, tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        boot_module.load_mnist(tmp_path)


def test_classification_metrics_are_macro_averaged(boot_module):
    labels, predictions = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    metrics = boot_module.classification_metrics(labels, predictions)
    assert metrics["accuracy"] == 0.75
    assert metrics["precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["recall"] == pytest.approx((0.5 + 1) / 2)
    assert metrics["f1"] == pytest.approx((2 / 3 + 0.8) / 2)


# ---------------------------------------------------------------- augmentation


def warp(boot_module, images, transforms):
    """The boot file's affine_warp on [N,28,28] arrays."""
    flat = tf.constant(np.asarray(images, np.float32).reshape(len(images), 784))
    moved = boot_module.affine_warp(flat, tf.constant(np.asarray(transforms, np.float32)))
    return moved.numpy().reshape(-1, 28, 28)


def reference_warp(image, transform):
    """Bilinear sampling written out pixel by pixel: output (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
    a0, a1, a2, b0, b1, b2 = np.asarray(transform, np.float64)

    def read(row, column):
        return image[row, column] if 0 <= row < 28 and 0 <= column < 28 else 0.0

    out = np.zeros((28, 28))
    for y in range(28):
        for x in range(28):
            sx, sy = a0 * x + a1 * y + a2, b0 * x + b1 * y + b2
            left, top = int(np.floor(sx)), int(np.floor(sy))
            fx, fy = sx - left, sy - top
            out[y, x] = ((1 - fy) * ((1 - fx) * read(top, left) + fx * read(top, left + 1))
                         + fy * ((1 - fx) * read(top + 1, left) + fx * read(top + 1, left + 1)))
    return out


def random_affine(rng, count):
    """Rotation, zoom, shear and shifts well past the augmentation's (so borders and fill are exercised)."""
    linear = np.eye(2) + rng.uniform(-0.4, 0.4, (count, 2, 2))
    shift = rng.uniform(-6, 6, (count, 2))
    return np.concatenate([linear[:, 0], shift[:, :1], linear[:, 1], shift[:, 1:]], axis=1)


def test_warp_identity_returns_the_input(boot_module):
    images = np.random.RandomState(0).uniform(0, 255, (4, 28, 28))
    np.testing.assert_allclose(warp(boot_module, images, [IDENTITY] * 4), images, rtol=1e-6)


def test_warp_integer_shift_moves_pixels_and_fills_zeros(boot_module):
    images = np.random.RandomState(1).uniform(1, 255, (1, 28, 28))
    moved = warp(boot_module, images, [[1, 0, 3, 0, 1, -2]])[0]  # output (x, y) reads input (x + 3, y - 2)
    np.testing.assert_allclose(moved[2:, :25], images[0, :26, 3:], rtol=1e-6)
    assert not moved[:2].any() and not moved[:, 25:].any()


def test_warp_matches_a_numpy_reference(boot_module):
    rng = np.random.RandomState(2)
    images, transforms = rng.uniform(0, 255, (3, 28, 28)), random_affine(rng, 3)
    expected = [reference_warp(image, transform) for image, transform in zip(images, transforms)]
    np.testing.assert_allclose(warp(boot_module, images, transforms), expected, atol=1e-3)


def test_warp_matches_tensorflows_projective_transform(boot_module):
    rng = np.random.RandomState(3)
    images, transforms = rng.uniform(0, 255, (16, 28, 28)).astype(np.float32), random_affine(rng, 16)
    projective = np.concatenate([transforms, np.zeros((16, 2))], axis=1).astype(np.float32)
    expected = tf.raw_ops.ImageProjectiveTransformV3(  # what augmentation used before: today's TF only
        images=images[..., None], transforms=projective, output_shape=[28, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    np.testing.assert_allclose(warp(boot_module, images, transforms), expected.numpy()[..., 0], atol=1e-3)


def test_augmentation_moves_each_image_a_little_and_differently(boot_module):
    images = np.zeros((64, 28, 28), np.float32)
    images[:, 12:17, 12:17] = 255
    flat = tf.constant(images.reshape(64, 784))
    np.testing.assert_allclose(boot_module.augment_images(flat, 0.0).numpy(), flat.numpy(), atol=1e-3)
    moved = boot_module.augment_images(flat, 1.0).numpy().reshape(64, 28, 28)
    grid = np.arange(28)
    centres = np.stack([(moved.sum(2) * grid).sum(1), (moved.sum(1) * grid).sum(1)], 1) / moved.sum((1, 2))[:, None]
    assert np.abs(centres - 14).max() <= 2.5  # shifts of at most 2 px, rotation and zoom about the centre
    assert len({tuple(c) for c in centres.round(2)}) > 32  # each image gets its own transform


# ---------------------------------------------------------------- training


def test_batches_cover_each_image_once_per_epoch(boot_module):
    batches = list(boot_module.batch_indices(10, 4, 5, seed=0))
    assert [len(b) for b in batches] == [4] * 5
    assert sorted(np.concatenate(batches)[:10]) == list(range(10))


def injected(synthetic_digits):
    """synthetic_digits in the shape train(datasets=...) takes."""
    images, labels = synthetic_digits
    return {"train": (images.reshape(-1, 784), labels.astype(np.int64)),
            "test": (images[:10].reshape(-1, 784), labels[:10].astype(np.int64))}


def quick_train(boot_module, out, datasets, *flags):
    """(model, metrics) of a few steps of train() on injected data."""
    args, _ = boot_module.parse_args(["--data_url", "unused", "--train_url", "unused", "--max_steps", "2",
                                      "--batch_size", "8", *flags])
    return boot_module.train(args, out, datasets=datasets)


def test_train_accepts_injected_datasets(boot_module, tmp_path, synthetic_digits):
    model, metrics = quick_train(boot_module, tmp_path, injected(synthetic_digits))
    assert {"accuracy", "precision", "recall", "f1"} <= set(metrics) and metrics["steps"] == 2
    assert model(np.zeros((1, 784), np.float32)).shape == (1, 10)


def test_same_seed_same_model(boot_module, tmp_path, synthetic_digits):
    data, probe = injected(synthetic_digits), np.random.RandomState(0).uniform(0, 1, (4, 784)).astype(np.float32)
    first, second, other = (quick_train(boot_module, tmp_path / str(n), data, "--seed", seed)[0](probe).numpy()
                            for n, seed in enumerate(["1", "1", "2"]))
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - other).max() > 1e-3


# ---------------------------------------------------------------- export


def v1_scores(model_dir, images):
    """Scores through the v1 loader in a Session: the path TF Serving takes."""
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(model_dir))
        signature = meta.signature_def["predict_images"]
        return session.run(signature.outputs["scores"].name, {signature.inputs["images"].name: images})


def v2_scores(model_dir, images):
    """Scores through tf.saved_model.load."""
    signature = tf.saved_model.load(str(model_dir)).signatures["predict_images"]
    return signature(images=tf.constant(images))["scores"].numpy()


@pytest.mark.parametrize("flags", [["--model", "cnn"], ["--model", "mlp"], ["--width", "2"]])
def test_export_scores_equal_the_keras_model(boot_module, tmp_path, embedded_arrays, flags):
    train_x, train_y, test_x, test_y = embedded_arrays
    data = {"train": (train_x[:256].reshape(-1, 784), train_y[:256].astype(np.int64)),
            "test": (test_x[:10].reshape(-1, 784), test_y[:10].astype(np.int64))}
    model, _ = quick_train(boot_module, tmp_path, data, *flags, "--max_steps", "20")  # BN stats move
    images = test_x[:50].reshape(-1, 784).astype(np.float32)  # raw 0-255 pixels
    expected = tf.nn.softmax(model(images / 255, training=False)).numpy()
    boot_module.export(model, tmp_path / "model")
    np.testing.assert_allclose(v1_scores(tmp_path / "model", images), expected, atol=1e-5)
    np.testing.assert_allclose(v2_scores(tmp_path / "model", images), expected, atol=1e-5)


def saved_graph(model_dir):
    """The GraphDef of the SavedModel's one MetaGraph."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((model_dir / "saved_model.pb").read_bytes())
    [meta] = saved.meta_graphs
    assert list(meta.meta_info_def.tags) == ["serve"]
    return meta.graph_def


def test_export_holds_only_classic_ops_and_the_variable_files_modelarts_expects(tiny_version):
    model_dir = tiny_version / "model"
    graph = saved_graph(model_dir)
    assert {node.op for node in graph.node} <= CLASSIC_OPS and not graph.library.function
    variables = [node for node in graph.node if node.op == "VarHandleOp"]
    assert len(variables) == 11  # 3 kernels without bias, 3 BNs as a scale and a shift, the last kernel and bias
    assert all("debug_name" not in node.attr for node in variables)  # TF 1.13 to 2.6 reject it
    assert sorted(p.name for p in (model_dir / "variables").iterdir()) == [
        "variables.data-00000-of-00001", "variables.index"]


def test_export_converts_to_tflite_from_its_loaded_signature(tiny_version):
    loaded = tf.saved_model.load(str(tiny_version / "model"))  # what the serving shim's fast path converts
    converter = tf.lite.TFLiteConverter.from_concrete_functions([loaded.signatures["predict_images"]], loaded)
    assert converter.convert()


def test_export_refuses_a_layer_it_cannot_translate(boot_module, tmp_path):
    model = tf.keras.Sequential([tf.keras.Input((784,)), tf.keras.layers.Dense(10, activation="sigmoid", name="odd")])
    with pytest.raises(ValueError, match="odd: activation sigmoid"):
        boot_module.export(model, tmp_path / "model")


def test_tiny_version_exports_exactly_predict_images(tiny_version):
    loaded = tf.saved_model.load(str(tiny_version / "model"))
    assert list(loaded.signatures) == ["predict_images"]
    signature = loaded.signatures["predict_images"]
    [spec] = signature.structured_input_signature[1].values()
    assert list(signature.structured_input_signature[1]) == ["images"]
    assert (spec.dtype, spec.shape.as_list()) == (tf.float32, [None, 784])
    output = signature.structured_outputs["scores"]
    assert list(signature.structured_outputs) == ["scores"]
    assert (output.dtype, output.shape.as_list()) == (tf.float32, [None, 10])


def test_tiny_version_scores_are_probabilities_of_raw_pixels(tiny_version, embedded_arrays):
    _, _, test_x, test_y = embedded_arrays
    scores = v2_scores(tiny_version / "model", test_x[200:400].reshape(-1, 784).astype(np.float32))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert (scores >= 0).all()
    assert np.mean(scores.argmax(1) == test_y[200:400]) > 0.8  # raw 0-255 input, scaled in the graph


def tensorboard_tags(folder):
    """The scalar tags in a folder's one events file."""
    [events] = folder.glob("events.out.tfevents.*")
    tags = set()
    for record in tf.data.TFRecordDataset(str(events)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        tags |= {(value.tag, event.step) for value in event.summary.value}
    return tags


def test_tiny_version_holds_metrics_and_tensorboard_scalars(tiny_version):
    metrics = json.loads((tiny_version / "metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1"} <= set(metrics) and metrics["accuracy"] > 0.8
    assert tensorboard_tags(tiny_version) == {(tag, step) for tag in ("cross_entropy", "accuracy")
                                              for step in (50, 100)}


# ---------------------------------------------------------------- outputs


def test_main_writes_into_train_url_itself(boot_module, small_dataset, tmp_path):
    target = tmp_path / "mnist-model" / "V0003"  # whatever the platform names it; created when missing
    argv = ["--data_url", str(small_dataset), "--train_url", str(target), *QUICK, "--some_platform_flag=1"]
    assert boot_module.main(argv) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist-model"]
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith("events.")) == ["metrics.json", "model"]
    assert (target / "model" / "saved_model.pb").is_file()


def test_a_folder_that_holds_a_model_is_refused_before_training(boot_module, small_dataset, tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    monkeypatch.setattr(boot_module, "train", lambda *a, **k: pytest.fail("trained anyway"))
    with pytest.raises(FileExistsError, match="model already exists"):
        boot_module.main(["--data_url", str(small_dataset), "--train_url", str(tmp_path), *QUICK])


def test_failed_export_leaves_no_half_model(boot_module, small_dataset, tmp_path, monkeypatch):
    def export_then_fail(model, model_dir):
        (Path(model_dir) / "variables").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(boot_module, "export", export_then_fail)
    with pytest.raises(OSError, match="disk full"):
        boot_module.main(["--data_url", str(small_dataset), "--train_url", str(tmp_path), *QUICK])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("events.")) == ["metrics.json"]


def test_remote_urls_without_moxing_point_to_the_local_runner(boot_module, tmp_path):
    with pytest.raises(SystemExit, match="modelarts-mnist train"):
        boot_module.main(["--data_url", "obs://bucket/dataset-mnist", "--train_url", str(tmp_path)])


def test_remote_urls_go_through_a_local_cache_with_moxing(boot_module, small_dataset, tmp_path):
    bucket = {"obs://b/dataset-mnist": small_dataset, "obs://b/mnist-model/V0002": tmp_path / "uploaded"}
    copies = []

    def copy_parallel(source, destination):  # moxing's folder copy, over a dict of URLs
        copies.append((source, destination))
        shutil.copytree(bucket.get(source, source), bucket.get(destination, destination), dirs_exist_ok=True)

    mox = SimpleNamespace(file=SimpleNamespace(copy_parallel=copy_parallel))
    args, _ = boot_module.parse_args(["--data_url", "obs://b/dataset-mnist", "--train_url",
                                      "obs://b/mnist-model/V0002", *QUICK])
    assert boot_module.run(args, mox) == "obs://b/mnist-model/V0002"
    (source, data), (output, destination) = copies
    assert (source, destination) == ("obs://b/dataset-mnist", "obs://b/mnist-model/V0002")
    assert Path(data).parent == Path(output).parent and not Path(output).parent.exists()  # the cache is gone
    assert sorted(p.name for p in (tmp_path / "uploaded").iterdir() if not p.name.startswith("events.")) == [
        "metrics.json", "model"]


def start_training(data, target):
    """The boot file as ModelArts runs it, in its own process, training for a long time."""
    command = [sys.executable, "-u", str(artifact_path(BOOT_FILE)), f"--data_url={data}", f"--train_url={target}",
               "--max_steps=100000", "--eval_every=1", "--batch_size=8", "--model=mlp"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def wait_for_training(process):
    """Read the log until the first evaluation line: training is under way."""
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if "step 1/" in line:
            return
        assert time.monotonic() < deadline
    pytest.fail("the boot file exited before training")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception
@pytest.mark.parametrize("signum, stop", [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_a_stop_signal_lost_in_a_finaliser_still_stops_training(boot_module, tmp_path, synthetic_digits, signum, stop):
    class Finaliser:
        def __del__(self):
            boot_module.stop_on_signal(signum, None)  # its exception is printed and dropped by Python

    try:
        Finaliser()
        assert boot_module.STOPS == [signum]
        with pytest.raises(stop):
            quick_train(boot_module, tmp_path, injected(synthetic_digits))
    finally:
        boot_module.STOPS.clear()


def test_interrupted_runs_leave_no_model(small_dataset, tmp_path):
    signals = {"int": signal.SIGINT, "term": signal.SIGTERM}
    processes = {name: start_training(small_dataset, tmp_path / name) for name in signals}
    for name, process in processes.items():  # both start together: one TF import's worth of waiting
        wait_for_training(process)
        process.send_signal(signals[name])
    for name, process in processes.items():
        process.communicate(timeout=60)
        assert process.returncode != 0
        assert [p.name for p in (tmp_path / name).iterdir() if not p.name.startswith("events.")] == []


# ---------------------------------------------------------------- ModelArts' engines

# Scores of each SavedModel given on the command line through every loader the engine has: the v1 loader in
# a Session (TF Serving's path; TF 1.13 has no other) and, from TF 2, tf.saved_model.load.
LOADER = '''
import sys
import numpy as np
import tensorflow as tf
images, results = np.load(sys.argv[1]), {}
for number, model_dir in enumerate(sys.argv[3:]):
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_dir)
        signature = meta.signature_def["predict_images"]
        results["v1-%d" % number] = session.run(signature.outputs["scores"].name,
                                                {signature.inputs["images"].name: images})
if int(tf.__version__.split(".")[0]) >= 2:  # all loaded before any is called: each keeps its own weights
    loaded = [tf.saved_model.load(model_dir) for model_dir in sys.argv[3:]]
    for number, model in enumerate(loaded):
        predict = model.signatures["predict_images"]
        results["v2-%d" % number] = predict(images=tf.constant(images))["scores"].numpy()
np.savez(sys.argv[2], **results)
'''


def run_on_engine(python, script, *args):
    """Run a script with an engine's interpreter; fail with its output when it fails."""
    done = subprocess.run([str(python), "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.slow
def test_boot_file_trains_on_tf21(tiny_version_tf21):
    metrics = json.loads((tiny_version_tf21 / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and metrics["steps"] == 100
    assert (tiny_version_tf21 / "model" / "variables" / "variables.index").is_file()
    assert tensorboard_tags(tiny_version_tf21) == {(tag, step) for tag in ("cross_entropy", "accuracy")
                                                   for step in (50, 100)}


@pytest.mark.slow
@pytest.mark.parametrize("engine, loaders", [("tf21_python", ["v1", "v2"]), ("tf113_python", ["v1"])],
                         ids=["tf2.1", "tf1.13"])
def test_versions_from_both_engines_load_there_with_todays_scores(request, tiny_version, tiny_version_tf21,
                                                                  embedded_arrays, tmp_path, engine, loaders):
    images = embedded_arrays[2][:64].reshape(-1, 784).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    models = [tiny_version / "model", tiny_version_tf21 / "model"]
    run_on_engine(request.getfixturevalue(engine), LOADER, tmp_path / "images.npy", tmp_path / "scores.npz", *models)
    scores = np.load(tmp_path / "scores.npz")
    assert sorted(scores) == sorted(f"{loader}-{n}" for loader in loaders for n in range(2))
    for number, model_dir in enumerate(models):
        expected = v2_scores(model_dir, images)
        for loader in loaders:
            np.testing.assert_allclose(scores[f"{loader}-{number}"], expected, atol=1e-5,
                                       err_msg=f"{loader} {model_dir}")
    assert np.abs(scores["v1-0"] - scores["v1-1"]).max() > 1e-3  # two models, not one loaded twice


# On the engine: train each network a few steps through the boot file's own functions, export, and
# compare the export's scores (both loaders) with the Keras model's.
EXPORT_CHECK = '''
import importlib.util, sys
import numpy as np
import tensorflow as tf
spec = importlib.util.spec_from_file_location("boot", sys.argv[1])
boot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(boot)
data = boot.load_mnist(sys.argv[2])
images = data["test"][0][:50].astype(np.float32)
results = {}
for kind in ("cnn", "mlp"):
    args, _ = boot.parse_args(["--data_url", "-", "--train_url", "-", "--model", kind, "--max_steps", "20",
                               "--batch_size", "16"])
    model, _ = boot.train(args, sys.argv[3] + "/" + kind, datasets=data)
    results[kind + "-keras"] = tf.nn.softmax(model(images / 255, training=False)).numpy()
    model_dir = boot.export(model, sys.argv[3] + "/" + kind + "/model")
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(model_dir))
        signature = meta.signature_def["predict_images"]
        results[kind + "-v1"] = session.run(signature.outputs["scores"].name,
                                            {signature.inputs["images"].name: images})
    predict = tf.saved_model.load(str(model_dir)).signatures["predict_images"]
    results[kind + "-v2"] = predict(images=tf.constant(images))["scores"].numpy()
np.savez(sys.argv[3] + "/scores.npz", **results)
'''


@pytest.mark.slow
def test_export_on_tf21_scores_as_its_keras_model(tf21_python, small_dataset, tmp_path):
    run_on_engine(tf21_python, EXPORT_CHECK, artifact_path(BOOT_FILE), small_dataset, tmp_path)
    scores = np.load(tmp_path / "scores.npz")
    for kind in ("cnn", "mlp"):
        for loader in ("v1", "v2"):
            np.testing.assert_allclose(scores[f"{kind}-{loader}"], scores[f"{kind}-keras"], atol=1e-5,
                                       err_msg=f"{kind} {loader}")
