"""Peer: BentoML service, 2 workers, LiteRT; POST /predict with the multipart field `images`."""
from pathlib import Path

import bentoml

from digit_model import DigitModel


@bentoml.service(workers=2)
class Digit:
    def __init__(self):
        self.model = DigitModel()

    @bentoml.api
    def predict(self, images: Path) -> dict:
        return self.model.answer(images.read_bytes())
