"""ModelArts boot file: train an MNIST classifier and export it as a SavedModel into --train_url.

Runs unchanged on ModelArts' TensorFlow engines (TF 2.1.0 on Python 3.7) and on today's TensorFlow,
with ``--data_url``/``--train_url`` given by the platform, and locally (``modelarts-mnist train``).
The platform names the output folder (the version); this file writes ``model/``, ``metrics.json``
and TensorBoard events into it. Self-contained: standard library, numpy, TensorFlow, and moxing only
when it is importable. The export has one signature, ``predict_images``: input ``images`` float32
[None, 784] raw pixels 0-255 (white digit on black), output ``scores`` float32 [None, 10] class
probabilities; it is a TF 1-style SavedModel of classic ops, so TF 1.13 to today's TF load it.
"""
import argparse
import gzip
import importlib
import json
import logging
import math
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

log = logging.getLogger("train_mnist_tf")

SIGNATURE_NAME = "predict_images"
SIDE = 28
IMAGE_PIXELS = SIDE * SIDE
NUM_CLASSES = 10
PIXEL_SCALE = 1.0 / 255  # the network sees pixels in [0, 1]; the export takes raw 0-255 pixels
MAX_SHIFT, MAX_ROTATION, MAX_ZOOM = 2.0, 10.0, 0.1  # pixels, degrees, fraction (at --augment 1)
# SummaryMetadata{plugin_data{plugin_name: "scalars"}}, serialized: what tf.summary.scalar attaches.
SCALAR_METADATA = b"\x0a\x09\x0a\x07scalars"
REMOTE_SCHEMES = ("obs://", "s3://")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ---------------------------------------------------------------- arguments


def parse_args(argv=None):
    """Known flags and the list of unknown ones (ModelArts adds its own, e.g. --num_gpus)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_url", required=True, help="folder with the four MNIST IDX files (raw or .gz)")
    parser.add_argument("--train_url", required=True,
                        help="output folder of this run (the version folder): model/, metrics.json, events")
    parser.add_argument("--max_steps", type=positive_int, default=600, help="training steps (batches)")
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--learning_rate", type=float, default=0.003, help="peak learning rate (Adam)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn",
                        help="cnn (default) or mlp, the tutorial's Dense(128) network")
    parser.add_argument("--eval_every", type=positive_int, default=200, help="steps between evaluations")
    parser.add_argument("--augment", type=float, default=1.0,
                        help="strength of the random shift/rotation/zoom augmentation (0: off)")
    parser.add_argument("--width", type=positive_int, default=1,
                        help="cnn: multiplies its filters and hidden units (2 for the full 60,000 images, README.md)")
    parser.add_argument("--label_smoothing", type=fraction, default=0.1,
                        help="share of each target spread over all classes (0: plain cross-entropy)")
    return parser.parse_known_args(argv)


def positive_int(text):
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def fraction(text):
    """An argparse type: a number from 0 up to, not including, 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 up to (not including) 1")
    return value


# ---------------------------------------------------------------- data


def read_idx(path) -> np.ndarray:
    """A uint8 array from an IDX file, raw or gzip-compressed."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic, = struct.unpack(">I", data[:4])
    if magic not in (2049, 2051):
        raise ValueError(f"{path}: not an IDX file (magic number {magic})")
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes of data, header says {shape}")
    return body.reshape(shape)


def find_idx(folder, name) -> Path:
    """The raw or .gz file `name` in `folder`."""
    for candidate in (Path(folder) / name, Path(folder) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: neither {name} nor {name}.gz found")


def load_mnist(data_url):
    """{"train": (images [N,784] uint8, labels [N] int64), "test": (...)} from a dataset folder."""
    datasets = {}
    for split, (images_name, labels_name) in FILES.items():
        images = read_idx(find_idx(data_url, images_name)).reshape(-1, IMAGE_PIXELS)
        labels = read_idx(find_idx(data_url, labels_name)).astype(np.int64)
        if len(images) != len(labels):
            raise ValueError(f"{data_url}: {split} has {len(images)} images but {len(labels)} labels")
        datasets[split] = (images, labels)
    return datasets


# ---------------------------------------------------------------- model


def build_model(kind="cnn", width=1):
    """A Keras model from pixels scaled to [0, 1], [N,784], to logits [N,10]; width multiplies the cnn's size."""
    layers = tf.keras.layers
    stem = [tf.keras.Input((IMAGE_PIXELS,))]
    if kind == "mlp":  # the tutorial's network
        return tf.keras.Sequential(stem + [layers.Dense(128, activation="relu"), layers.Dense(NUM_CLASSES)])

    def conv(filters, size):
        # momentum 0.9: with a few hundred steps the default 0.99 leaves the moving stats unconverged
        return [layers.Conv2D(filters, size, use_bias=False), layers.BatchNormalization(momentum=0.9),
                layers.ReLU()]

    # LeNet-shaped, 1.1M multiply-adds per digit. Against 32-64-64 filters (4.8M) it scored the same on
    # held-out digits (median of 5 seeds 98.8% vs 98.9% of 3), trains in half the time and serves a
    # digit in a quarter of the compute (benchmarks/train_bench.py, benchmarks/serve_bench.py).
    return tf.keras.Sequential(stem + [
        layers.Reshape((SIDE, SIDE, 1)),
        *conv(16 * width, 5), layers.MaxPooling2D(),
        *conv(32 * width, 5), layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128 * width, use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU(),
        layers.Dropout(0.3),
        layers.Dense(NUM_CLASSES),
    ])


def scale_pixels(images):
    """Raw 0-255 pixels as the float32 [0, 1] input the network takes."""
    return tf.cast(images, tf.float32) * PIXEL_SCALE


# ---------------------------------------------------------------- augmentation


def augment_images(images, strength=1.0):
    """Randomly shift (2 px), rotate (10 degrees) and zoom (10%) each flat image, scaled by `strength`."""
    batch = tf.shape(images)[0]
    angle = tf.random.uniform((batch,), -1.0, 1.0) * (MAX_ROTATION * strength * math.pi / 180)
    scale = 1.0 + tf.random.uniform((batch,), -1.0, 1.0) * (MAX_ZOOM * strength)
    shift = tf.random.uniform((batch, 2), -1.0, 1.0) * (MAX_SHIFT * strength)
    cos, sin, center = tf.cos(angle) / scale, tf.sin(angle) / scale, (SIDE - 1) / 2
    # Each row maps output (x, y) to input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotation about the centre.
    transforms = tf.stack([cos, -sin, center - (cos - sin) * center + shift[:, 0],
                           sin, cos, center - (sin + cos) * center + shift[:, 1]], axis=1)
    return affine_warp(images, transforms)


def affine_warp(images, transforms):
    """Flat 28x28 images resampled bilinearly: output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2).

    `transforms` is [N, 6] (a0, a1, a2, b0, b1, b2); x is the column, y the row, pixel centres sit at
    integer coordinates and pixels outside the image read as 0, as in TensorFlow's ImageProjectiveTransform
    (which TF 2.1 lacks, hence gathers and arithmetic).
    """
    rows, cols = np.mgrid[0:SIDE, 0:SIDE].reshape(2, 1, IMAGE_PIXELS).astype(np.float32)
    a0, a1, a2, b0, b1, b2 = tf.split(tf.cast(transforms, tf.float32), 6, axis=1)
    x, y = a0 * cols + a1 * rows + a2, b0 * cols + b1 * rows + b2
    left, top = tf.floor(x), tf.floor(y)
    right_weight, bottom_weight = x - left, y - top
    flat = tf.reshape(images, [-1])
    first = tf.range(tf.shape(images)[0])[:, None] * IMAGE_PIXELS  # where each image starts in `flat`

    def pixel(column, row):
        inside = (column >= 0) & (column <= SIDE - 1) & (row >= 0) & (row <= SIDE - 1)
        index = tf.cast(tf.clip_by_value(row, 0, SIDE - 1) * SIDE + tf.clip_by_value(column, 0, SIDE - 1), tf.int32)
        return tf.where(inside, tf.gather(flat, first + index), tf.zeros_like(column))

    upper = (1 - right_weight) * pixel(left, top) + right_weight * pixel(left + 1, top)
    lower = (1 - right_weight) * pixel(left, top + 1) + right_weight * pixel(left + 1, top + 1)
    return (1 - bottom_weight) * upper + bottom_weight * lower


# ---------------------------------------------------------------- training


def set_seeds(seed):
    """Seed TensorFlow's ops and Python's random (Keras 3 draws initializer and dropout seeds from it)."""
    random.seed(seed)
    tf.random.set_seed(seed)


def batch_indices(count, batch_size, steps, seed):
    """Index batches drawn from successive shuffled epochs (independent of the dataset size)."""
    rng = np.random.RandomState(seed)
    order = np.empty(0, dtype=np.int64)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(count)])
        yield order[:batch_size]
        order = order[batch_size:]


def make_optimizer(args):
    """Adam; for the CNN the learning rate warms up, then decays linearly."""
    if args.model == "mlp":
        return tf.keras.optimizers.Adam(args.learning_rate)
    return tf.keras.optimizers.Adam(WarmupLinearDecay(args.learning_rate, args.max_steps))


class WarmupLinearDecay(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over 5% of the steps, then linear decay to 1% of the peak."""

    def __init__(self, peak, total_steps):
        self.peak, self.total = float(peak), float(max(total_steps, 1))

    def __call__(self, step):
        progress = tf.cast(step, tf.float32) / self.total
        warm = progress / 0.05
        decay = 1.0 - 0.99 * (progress - 0.05) / 0.95
        return self.peak * tf.clip_by_value(tf.minimum(warm, decay), 0.01, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total}


def evaluate(model, images, labels, batch_size=1000):
    """(mean cross-entropy, predicted classes) on a split."""
    losses, predictions = [], []
    for start in range(0, len(images), batch_size):
        logits = model(scale_pixels(images[start:start + batch_size]), training=False)
        losses.append(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[start:start + batch_size], logits))
        predictions.append(tf.argmax(logits, axis=1).numpy())
    return float(tf.reduce_mean(tf.concat(losses, 0))), np.concatenate(predictions)


def classification_metrics(labels, predictions):
    """Accuracy and macro precision, recall and f1 from a confusion matrix."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    hits = np.diag(matrix).astype(float)
    precision = np.divide(hits, matrix.sum(0), out=np.zeros(NUM_CLASSES), where=matrix.sum(0) > 0)
    recall = np.divide(hits, matrix.sum(1), out=np.zeros(NUM_CLASSES), where=matrix.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(NUM_CLASSES),
                   where=(precision + recall) > 0)
    present = matrix.sum(1) > 0  # macro over classes that occur in the test split
    return {"accuracy": float(hits.sum() / max(matrix.sum(), 1)), "precision": float(precision[present].mean()),
            "recall": float(recall[present].mean()), "f1": float(f1[present].mean())}


def training_loss(labels, logits, smoothing=0.0):
    """Mean cross-entropy against the labels, each target softened by `smoothing` (0: the plain sparse loss)."""
    if not smoothing:
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    targets = tf.one_hot(labels, NUM_CLASSES) * (1 - smoothing) + smoothing / NUM_CLASSES
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits))


def make_train_step(model, optimizer, augment, smoothing=0.0):
    """A compiled step: augment a batch of raw pixels, scale it, one Adam update; returns the batch loss."""

    @tf.function
    def step(images, labels):
        batch = tf.cast(images, tf.float32)
        if augment:
            batch = augment_images(batch, augment)
        with tf.GradientTape() as tape:
            logits = model(scale_pixels(batch), training=True)
            loss = training_loss(labels, logits, smoothing)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def write_scalars(writer, step, **values):
    """TensorBoard scalars at `step`, through the core summary op (needs no tensorboard package)."""
    with writer.as_default():
        for tag, value in values.items():
            tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=SCALAR_METADATA)


def train(args, out_dir, datasets=None):
    """Train on `datasets` (or data_url's files); write TensorBoard scalars; return (model, metrics)."""
    datasets = datasets or load_mnist(args.data_url)
    (train_x, train_y), (test_x, test_y) = datasets["train"], datasets["test"]
    set_seeds(args.seed)
    model = build_model(args.model, args.width)
    step = make_train_step(model, make_optimizer(args), args.augment if args.model == "cnn" else 0,
                           args.label_smoothing)
    writer = tf.summary.create_file_writer(str(out_dir))
    images, labels = tf.constant(train_x), tf.constant(train_y)
    started = time.monotonic()
    for number, index in enumerate(batch_indices(len(train_x), args.batch_size, args.max_steps, args.seed), 1):
        step(tf.gather(images, index), tf.gather(labels, index))
        exit_if_stopped()
        if number % args.eval_every == 0 or number == args.max_steps:
            cross_entropy, predictions = evaluate(model, test_x, test_y)
            accuracy = float(np.mean(predictions == test_y))
            write_scalars(writer, number, cross_entropy=cross_entropy, accuracy=accuracy)
            log.info("step %d/%d: test cross_entropy %.4f, accuracy %.4f (%.1f s)",
                     number, args.max_steps, cross_entropy, accuracy, time.monotonic() - started)
    writer.close()
    metrics = classification_metrics(test_y, predictions)
    metrics.update(cross_entropy=cross_entropy, steps=args.max_steps, train_seconds=time.monotonic() - started,
                   train_images=len(train_x), test_images=len(test_x), model=args.model)
    return model, metrics


# ---------------------------------------------------------------- export


def export(model, model_dir):
    """Save `model` as a SavedModel with the one signature predict_images (raw pixels -> probabilities).

    Not tf.saved_model.save: its save functions (DisableCopyOnRead) and attrs (VarHandleOp's debug_name) do
    not load on TF 1.13 to 2.6. This is a TF 1-style graph of classic ops rebuilt from the trained layers,
    its weights in variables under a plain Saver, which writes the variables/variables.index and
    .data-00000-of-00001 files ModelArts expects. Resource variables rather than VariableV2: TF 2.1's
    loader keeps them apart per loaded model, and TFLite converts the loaded signature.
    """
    weights = GraphWeights(model)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, IMAGE_PIXELS], name="images")
        logits = inference_ops(model, tf.multiply(images, PIXEL_SCALE), weights)
        scores = tf.nn.softmax(logits, name="scores")
        signature = tf.compat.v1.saved_model.predict_signature_def({"images": images}, {"scores": scores})
        saver = tf.compat.v1.train.Saver(sharded=False)
        with tf.compat.v1.Session(graph=graph) as session:
            weights.load(session)
            builder = tf.compat.v1.saved_model.Builder(str(model_dir))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={SIGNATURE_NAME: signature},
                                                 saver=saver, strip_default_attrs=True)
            builder.save()
    return Path(model_dir)


class GraphWeights:
    """The trained weights, read eagerly, and the variables of the export graph that will hold them."""

    def __init__(self, model):
        # Read before the graph is built: TF 2.1 cannot read an eager variable inside a graph context.
        self.trained = {id(variable): variable.numpy() for variable in model.weights}
        self.assignments = []

    def value(self, variable):
        """The trained value of one of the model's variables, as a numpy array."""
        return self.trained[id(variable)]

    def new(self, layer, name, value):
        """A graph variable `<layer>/<name>` that will hold the numpy array `value`."""
        value = np.asarray(value, np.float32)
        # Initialised from zeros and fed the value, so the weights are not stored twice (graph and variables/).
        variable = tf.compat.v1.Variable(tf.zeros(value.shape), name=f"{layer.name}/{name}", use_resource=True)
        # TF 2.21 gives the VarHandleOp a debug_name, an attr TF 1.13 to 2.6 reject; the op itself they have.
        if "debug_name" in variable.op.node_def.attr:
            variable.op._clear_attr("debug_name")
        self.assignments.append((variable, value))
        return variable

    def copy(self, layer, name):
        """A graph variable holding the layer's trained weight `name` (kernel, bias)."""
        return self.new(layer, name, self.value(getattr(layer, name)))

    def load(self, session):
        """Give every graph variable its value in `session`."""
        for variable, value in self.assignments:
            session.run(variable.initializer, {variable.initial_value: value})


def inference_ops(model, x, weights):
    """The Sequential model's layers rebuilt one by one as classic TF 1 ops on `x`; returns the logits."""
    builders = layer_builders()
    for layer in model.layers:
        build = builders.get(type(layer))
        if build is None:
            raise ValueError(f"cannot export layer {layer.name}: {type(layer).__name__} is not supported")
        x = build(layer, x, weights)
    return x


def layer_builders():
    """Keras layer class -> function(layer, x, weights) giving the layer's inference output."""
    layers = tf.keras.layers
    return {layers.InputLayer: identity_ops, layers.Dropout: identity_ops, layers.Reshape: reshape_ops,
            layers.Flatten: flatten_ops, layers.Conv2D: conv2d_ops, layers.Dense: dense_ops,
            layers.BatchNormalization: batch_norm_ops, layers.MaxPooling2D: max_pool_ops, layers.ReLU: relu_ops,
            layers.Activation: lambda layer, x, weights: activation_ops(layer, layer.activation, x)}


def require(layer, condition, what):
    """Refuse a layer configuration the export does not translate."""
    if not condition:
        raise ValueError(f"cannot export layer {layer.name}: {what} is not supported")


def identity_ops(layer, x, weights):
    """Input and Dropout: nothing to do at inference."""
    return x


def reshape_ops(layer, x, weights):
    """Reshape, batch axis kept."""
    return tf.reshape(x, [-1, *layer.target_shape])


def flatten_ops(layer, x, weights):
    """Flatten, in the channels-last order Keras uses."""
    return tf.reshape(x, [-1, int(np.prod(x.shape.as_list()[1:]))])


def conv2d_ops(layer, x, weights):
    """Conv2D, BiasAdd when the layer has a bias, then its activation."""
    require(layer, layer.data_format == "channels_last", "channels_first")
    x = tf.nn.conv2d(x, weights.copy(layer, "kernel"), strides=[1, *layer.strides, 1],
                     padding=layer.padding.upper(), dilations=[1, *layer.dilation_rate, 1])
    return activation_ops(layer, layer.activation, bias_ops(layer, x, weights))


def dense_ops(layer, x, weights):
    """MatMul, BiasAdd when the layer has a bias, then its activation."""
    x = tf.matmul(x, weights.copy(layer, "kernel"))
    return activation_ops(layer, layer.activation, bias_ops(layer, x, weights))


def bias_ops(layer, x, weights):
    """BiasAdd of the layer's bias, if it has one."""
    return tf.nn.bias_add(x, weights.copy(layer, "bias")) if layer.use_bias else x


def batch_norm_ops(layer, x, weights):
    """Inference BatchNormalization (moving statistics) as one scale and one shift per channel."""
    last = x.shape.ndims - 1
    require(layer, [axis % x.shape.ndims for axis in np.ravel(layer.axis)] == [last], "an axis but the last")
    variance = weights.value(layer.moving_variance).astype(np.float64)
    scale = (weights.value(layer.gamma) if layer.scale else 1.0) / np.sqrt(variance + layer.epsilon)
    shift = (weights.value(layer.beta) if layer.center else 0.0) - weights.value(layer.moving_mean) * scale
    return tf.nn.bias_add(tf.multiply(x, weights.new(layer, "scale", scale)), weights.new(layer, "shift", shift))


def max_pool_ops(layer, x, weights):
    """MaxPool, channels last."""
    require(layer, layer.data_format == "channels_last", "channels_first")
    return tf.nn.max_pool2d(x, [1, *layer.pool_size, 1], [1, *layer.strides, 1], layer.padding.upper())


def relu_ops(layer, x, weights):
    """A plain ReLU layer."""
    plain = layer.max_value is None and not layer.negative_slope and not layer.threshold
    require(layer, plain, "a capped, leaky or thresholded ReLU")
    return tf.nn.relu(x)


def activation_ops(layer, function, x):
    """A Keras activation function (linear or relu) applied to `x`."""
    name = getattr(function, "__name__", repr(function))
    require(layer, name in ("linear", "relu"), f"activation {name}")
    return tf.nn.relu(x) if name == "relu" else x


# ---------------------------------------------------------------- outputs


def load_moxing():
    """The moxing module on ModelArts, None elsewhere."""
    try:
        return importlib.import_module("moxing")
    except ImportError:
        return None


def is_remote(url):
    """True for obs:// and s3:// URLs."""
    return str(url).startswith(REMOTE_SCHEMES)


def require_moxing(args, mox):
    """Exit with a pointer to the local runner when remote URLs come without moxing."""
    remote = [url for url in (args.data_url, args.train_url) if is_remote(url)]
    if remote and mox is None:
        raise SystemExit(f"{remote[0]}: obs:// and s3:// URLs need moxing (available on ModelArts). "
                         "To run locally, use `modelarts-mnist train`, which stages data in and out.")


def write_json(path, payload):
    """Write JSON beside the target, then rename (readers never see half a file)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(partial, path)


def publish_model(model, model_dir):
    """Export into a temp sibling, then rename it to model_dir: an interrupted run leaves no half model."""
    temp = model_dir.with_name(f".{model_dir.name}.tmp-{os.getpid()}")
    try:
        export(model, temp)
        os.replace(temp, model_dir)
        log.info("exported %s", model_dir)
    except BaseException:  # Ctrl-C, SIGTERM or a crash
        shutil.rmtree(temp, ignore_errors=True)
        raise


def train_into(args, out_dir):
    """Train, then write metrics.json and, last, model/ into the local folder out_dir."""
    model_dir = out_dir / "model"
    if model_dir.exists():
        raise FileExistsError(f"{model_dir} already exists; give each training run its own --train_url")
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("training %s into %s", args.model, args.train_url)
    model, metrics = train(args, out_dir)
    write_json(out_dir / "metrics.json", metrics)
    log.info("metrics: %s", json.dumps({k: metrics[k] for k in ("accuracy", "precision", "recall", "f1")}))
    publish_model(model, model_dir)


def run(args, mox=None):
    """Train into train_url, through a local cache for obs:// or s3:// URLs; returns train_url."""
    cache = Path(tempfile.mkdtemp(prefix="mnist-cache-"))
    try:
        if is_remote(args.data_url):
            mox.file.copy_parallel(args.data_url, str(cache / "data"))
            args.data_url = str(cache / "data")
        if not is_remote(args.train_url):
            train_into(args, Path(args.train_url))
            return Path(args.train_url)
        train_into(args, cache / "output")
        mox.file.copy_parallel(str(cache / "output"), args.train_url)
        return args.train_url
    finally:
        shutil.rmtree(cache, ignore_errors=True)


# ---------------------------------------------------------------- entry point


# Stop signals received. Python prints and drops an exception raised while a finaliser runs (TensorFlow's
# eager tensors have many), so the training loop also looks here between steps.
STOPS = []


def interruption(signum):
    """The exception a stop signal ends the run with: Ctrl-C's KeyboardInterrupt, SystemExit for the others."""
    return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)


def stop_on_signal(signum, frame):
    """Record a stop signal (kill, platform stop, Ctrl-C) and raise, so the temp model folder is removed."""
    STOPS.append(signum)
    raise interruption(signum)


def exit_if_stopped():
    """Raise the stop a signal asked for, when its own exception was lost."""
    if STOPS:
        raise interruption(STOPS[0])


def main(argv=None):
    """Command-line entry: parse flags, train, export; returns the output folder (or URL)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    # The v1 SavedModel builder's deprecation notes and "no assets" lines are noise, and TF prints them twice.
    tf.get_logger().setLevel(logging.ERROR)
    args, unknown = parse_args(argv)
    if unknown:
        log.info("ignoring unknown arguments: %s", " ".join(unknown))
    mox = load_moxing()
    require_moxing(args, mox)
    previous = {signum: signal.signal(signum, stop_on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        produced = run(args, mox)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("output: %s", produced)
    return produced


if __name__ == "__main__":
    main()
