"""Peer: a TorchServe handler (module entry point) running model.tflite on LiteRT, batch by batch."""
import os

from digit_model import DigitModel

model = None


def handle(data, context):
    """One answer per request of the batch TorchServe hands over (None at its initial call)."""
    global model
    if model is None:
        model = DigitModel(os.path.join(context.system_properties["model_dir"], "model.tflite"))
    if data is None:
        return None
    images = [row.get("images") or row.get("data") or row.get("body") for row in data]
    return model.answer_many([bytes(image) for image in images])
