"""The boot file codes/train_mnist_tf.py: flags, data, export signature, versions, interruption."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from modelarts_mnist.artifacts import BOOT_FILE, artifact_path

QUICK = ["--model", "mlp", "--max_steps", "3", "--batch_size", "16"]


def test_unknown_arguments_are_tolerated(boot_module):
    args, unknown = boot_module.parse_args(["--data_url=d", "--train_url=t", "--num_gpus=1", "--max_steps", "9",
                                            "--init_method", "tcp://x"])
    assert (args.data_url, args.max_steps) == ("d", 9)
    assert unknown == ["--num_gpus=1", "--init_method", "tcp://x"]


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


def test_batches_cover_each_image_once_per_epoch(boot_module):
    batches = list(boot_module.batch_indices(10, 4, 5, seed=0))
    assert [len(b) for b in batches] == [4] * 5
    assert sorted(np.concatenate(batches)[:10]) == list(range(10))


def test_train_accepts_injected_datasets(boot_module, tmp_path, synthetic_digits):
    images, labels = synthetic_digits
    data = {"train": (images.reshape(-1, 784), labels.astype(np.int64)),
            "test": (images[:10].reshape(-1, 784), labels[:10].astype(np.int64))}
    args, _ = boot_module.parse_args(["--data_url", "unused", "--train_url", "unused", "--max_steps", "2",
                                      "--batch_size", "8"])
    model, metrics = boot_module.train(args, tmp_path, datasets=data)
    assert {"accuracy", "precision", "recall", "f1"} <= set(metrics) and metrics["steps"] == 2
    assert model(np.zeros((1, 784), np.float32)).shape == (1, 10)


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
    signature = tf.saved_model.load(str(tiny_version / "model")).signatures["predict_images"]
    _, _, test_x, test_y = embedded_arrays
    scores = signature(images=tf.constant(test_x[200:400].reshape(-1, 784), tf.float32))["scores"].numpy()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert (scores >= 0).all()
    assert np.mean(scores.argmax(1) == test_y[200:400]) > 0.8  # raw 0-255 input, scaled in the graph


def test_tiny_version_holds_metrics_and_tensorboard_scalars(tiny_version):
    metrics = json.loads((tiny_version / "metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1"} <= set(metrics) and metrics["accuracy"] > 0.8
    [events] = tiny_version.glob("events.out.tfevents.*")
    tags = set()
    for record in tf.data.TFRecordDataset(str(events)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        tags |= {value.tag for value in event.summary.value}
    assert tags == {"cross_entropy", "accuracy"}


def test_runs_make_v0001_then_v0002_and_log_each_evaluation(boot_module, small_dataset, tmp_path, capsys):
    argv = ["--data_url", str(small_dataset), "--train_url", str(tmp_path), "--eval_every", "1", *QUICK,
            "--some_platform_flag=1"]
    assert boot_module.main(argv) == tmp_path / "V0001"
    assert boot_module.main(argv) == tmp_path / "V0002"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["V0001", "V0002"]
    assert (tmp_path / "V0002" / "model" / "saved_model.pb").is_file()


def test_explicit_version_folder_is_used_as_is(boot_module, small_dataset, tmp_path):
    target = tmp_path / "V0007"
    target.mkdir()  # an empty folder, as a platform would create it
    assert boot_module.main(["--data_url", str(small_dataset), "--train_url", str(target), *QUICK]) == target
    with pytest.raises(FileExistsError, match="V0007"):
        boot_module.main(["--data_url", str(small_dataset), "--train_url", str(target), *QUICK])


def test_remote_urls_without_moxing_point_to_the_local_runner(boot_module, tmp_path):
    with pytest.raises(SystemExit, match="modelarts-mnist train"):
        boot_module.main(["--data_url", "obs://bucket/dataset-mnist", "--train_url", str(tmp_path)])


def test_remote_version_follows_the_listing(boot_module):
    listing = {"obs://b/out": ["V0001/", "V0003/", "logs/"]}
    mox = SimpleNamespace(file=SimpleNamespace(exists=lambda url: url in listing, list_directory=listing.get))
    assert boot_module.next_remote_version(mox, "obs://b/out/") == "obs://b/out/V0004"
    assert boot_module.next_remote_version(mox, "obs://b/new") == "obs://b/new/V0001"
    assert boot_module.next_remote_version(mox, "obs://b/out/V0009") == "obs://b/out/V0009"


def start_training(data, root):
    """The boot file as ModelArts runs it, in its own process, training for a long time."""
    command = [sys.executable, "-u", str(artifact_path(BOOT_FILE)), f"--data_url={data}", f"--train_url={root}",
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


def test_interrupted_runs_leave_no_version(boot_module, small_dataset, tmp_path):
    signals = {"int": signal.SIGINT, "term": signal.SIGTERM, "kill": signal.SIGKILL}
    processes = {name: start_training(small_dataset, tmp_path / name) for name in signals}
    for name, process in processes.items():  # all three start together: one TF import's worth of waiting
        wait_for_training(process)
        process.send_signal(signals[name])
    for name, process in processes.items():
        process.communicate(timeout=60)
        assert process.returncode != 0
        leftovers = sorted(p.name for p in (tmp_path / name).iterdir())
        assert not any(boot_module.VERSION_PATTERN.match(n) for n in leftovers), leftovers
        if name == "kill":  # kill -9 cannot clean up: a dead, unlocked temp folder stays (never a version)
            assert len(leftovers) == 1 and boot_module.TEMP_PATTERN.match(leftovers[0])
        else:
            assert leftovers == []
    target, temp, fd = boot_module.reserve_version(tmp_path / "kill")
    os.close(fd)
    assert target.name == "V0001" and [p.name for p in (tmp_path / "kill").iterdir()] == [temp.name]
