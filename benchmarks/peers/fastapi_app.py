"""Peer: FastAPI on uvicorn (httptools, uvloop), async endpoint, LiteRT; started with --workers 2."""
from fastapi import FastAPI, File, UploadFile

from digit_model import DigitModel

app = FastAPI()
model = DigitModel()


@app.post("/")
async def predict(images: UploadFile = File(...)):
    return model.answer(await images.read())


@app.get("/health")
async def health():
    return {"health": "true"}
