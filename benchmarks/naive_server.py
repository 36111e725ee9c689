"""The naive baseline for serve_bench: the tutorial's inference code behind Flask's development server.

    python benchmarks/naive_server.py MODEL_DIR --port PORT

One process (Flask's dev server, threaded as by default), the SavedModel loaded with
tf.saved_model.load, and its signature called once per request, the way the tutorial's
customize_service.py does it: PIL decode, 28x28 gray, float32 [1, 784], signature(images=...).
No warm-up, no thread-pool sizing: what a first attempt looks like.
"""
from __future__ import annotations

import argparse
import io

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image


def create_naive_app(model_dir: str) -> Flask:
    """A Flask app answering POST / (multipart `images`) with the top digit and its scores."""
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)
    name = next(iter(model.signatures.keys()))
    predict = model.signatures[name]
    app = Flask(__name__)

    @app.post("/")
    def infer():
        upload = next(iter(request.files.values()))
        image = Image.open(io.BytesIO(upload.read())).convert("L").resize((28, 28))
        pixels = np.asarray(image, dtype=np.float32).reshape(1, 784)
        scores = predict(images=tf.constant(pixels))["scores"].numpy()[0]
        return jsonify(predicted_label=str(int(scores.argmax())), scores=[float(s) for s in scores])

    @app.get("/health")
    def health():
        return jsonify(health="true")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    create_naive_app(args.model_dir).run(args.host, args.port)


if __name__ == "__main__":
    main()
