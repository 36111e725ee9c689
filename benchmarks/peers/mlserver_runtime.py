"""Peer: an MLServer custom runtime; V2 inference JSON with the PNG as one base64 BYTES element."""
import base64
import json

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from digit_model import DigitModel


class DigitRuntime(MLModel):
    async def load(self) -> bool:
        self.model = DigitModel()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = [base64.b64decode(item) for item in payload.inputs[0].data.root]
        answers = [json.dumps(answer) for answer in self.model.answer_many(images)]
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="answer", shape=[len(answers)], datatype="BYTES", data=answers)])
