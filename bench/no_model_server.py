"""The project's own LitServe server with the forward pass taken out: bench/serving.py's `litserve, no model` row.

What HTTP, request validation, LitServe's queues and worker processes, and the response encoding cost per request on
this machine, with the same layout and batching as the measured server: everything of `python -m <pkg>.serve` except
that the Predictor is replaced by one that answers at once. Run by bench/serving.py in the project's environment:
    python bench/no_model_server.py <package> <serve flags>...
"""

import importlib
import os
import sys
from typing import Any

if __name__ == "__main__":
    # LitServe's worker processes are spawned: they run this file again (as __mp_main__) and inherit the environment.
    os.environ["NO_MODEL_PACKAGE"] = sys.argv.pop(1)
package = os.environ["NO_MODEL_PACKAGE"]
serve = importlib.import_module(f"{package}.serve")
Prediction = importlib.import_module(f"{package}.predictor").Prediction


class NoForwardPass:
    """Stands in for the Predictor: answers of the same shape, without tokenizing or running the model."""

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> "NoForwardPass":
        return cls()

    def predict(self, texts: list[str]) -> list[Any]:
        answer = Prediction(label="positive", score=1.0, probabilities={"negative": 0.0, "positive": 1.0})
        return [answer for _ in texts]


serve.Predictor = NoForwardPass  # the name TextClassifierAPI.setup loads from, in this process and in every worker

if __name__ == "__main__":
    serve.main()
