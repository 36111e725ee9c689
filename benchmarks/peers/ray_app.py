"""Peer: Ray Serve with a FastAPI ingress, 2 replicas of one CPU each, LiteRT; POST / with field `images`."""
import sys
import time

import ray
from fastapi import FastAPI, File, UploadFile
from ray import serve

from digit_model import DigitModel

app = FastAPI()


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 1})
@serve.ingress(app)
class Digit:
    def __init__(self):
        self.model = DigitModel()

    @app.post("/")
    async def predict(self, images: UploadFile = File(...)):
        return self.model.answer(await images.read())


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
    serve.run(Digit.bind(), route_prefix="/")
    while True:
        time.sleep(3600)
