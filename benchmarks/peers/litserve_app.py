"""Peer: LitServe on CPU, 2 workers, LiteRT; POST /predict with the multipart field `images`."""
import sys

import litserve as ls

from digit_model import DigitModel


class DigitAPI(ls.LitAPI):
    def setup(self, device):
        self.model = DigitModel()

    def decode_request(self, request):
        return request["images"].file.read()

    def predict(self, data):
        return self.model.answer(data)

    def encode_response(self, output):
        return output


if __name__ == "__main__":
    server = ls.LitServer(DigitAPI(), accelerator="cpu", workers_per_device=2)
    server.run(port=int(sys.argv[1]), generate_client_file=False)
