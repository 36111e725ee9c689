"""The work every peer server does, so only the server differs: one PNG in, top-5 JSON out, on LiteRT.

Decode the upload, make it 28x28 8-bit grey, run model.tflite (our SavedModel converted by
peer_bench.py: input [N, 784] raw pixels, output [N, 10] probabilities), answer the label and the
top-5 as `serve` does. No cropping or centring: the benchmark digits are already MNIST-shaped.
"""
import io
import os

import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter

SIDE = 28
TOP_K = 5


class DigitModel:
    """A LiteRT interpreter sized per batch; one per worker process (not thread-safe)."""

    def __init__(self, path=None):
        path = path or os.environ["PEER_MODEL"]
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.entry = self.interpreter.get_input_details()[0]["index"]
        self.exit = self.interpreter.get_output_details()[0]["index"]
        self.rows = 0

    def scores(self, pixels):
        """Probabilities [N, 10] for pixels [N, 784] float32."""
        if pixels.shape[0] != self.rows:
            self.interpreter.resize_tensor_input(self.entry, list(pixels.shape))
            self.interpreter.allocate_tensors()
            self.rows = pixels.shape[0]
        self.interpreter.set_tensor(self.entry, pixels)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.exit)

    def answer_many(self, images):
        """The answers for a list of encoded images, run as one batch."""
        pixels = np.stack([decode(data) for data in images])
        return [describe(row) for row in self.scores(pixels)]

    def answer(self, data):
        """The answer for one encoded image."""
        return self.answer_many([data])[0]


def decode(data):
    """An encoded image as 784 float32 grey pixels."""
    image = Image.open(io.BytesIO(data)).convert("L")
    if image.size != (SIDE, SIDE):
        image = image.resize((SIDE, SIDE), Image.BILINEAR)
    return np.asarray(image, np.float32).reshape(SIDE * SIDE)


def describe(scores):
    """{"predicted_label", "scores": [[label, "0.999"], ...]}, as `serve` answers."""
    top = np.argsort(scores)[::-1][:TOP_K]
    return {"predicted_label": str(int(top[0])),
            "scores": [[str(int(i)), "%.3f" % float(scores[i])] for i in top]}
