"""`uv run serve`: the fine-tuned classifier as a LitServe REST API (POST /predict, /health, /info, /docs).

Requests are validated by FastAPI in the API server process (a bad body is a 422 there and never reaches the model);
the inference worker batches concurrent requests (`serving.max_batch_size`, `serving.batch_timeout`) into one forward
pass. Set LIT_SERVER_API_KEY to require an `X-API-Key` header on every endpoint, /health included.

No `from __future__ import annotations` here: LitServe hands the annotations of `decode_request`/`encode_response`
to FastAPI as objects, and string annotations would turn the request body into a query parameter.
"""

import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import litserve as ls
import torch
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from transformers import PretrainedConfig

from {{ cookiecutter.package_name }}.predictor import ModelDirError, Prediction, Predictor, check_model_dir, label_names
from {{ cookiecutter.package_name }}.settings import Settings, settings_or_exit

MAX_TEXT_CHARS = 100_000  # far beyond any model's max_length; bounds the tokenizer's work per text
SHUTDOWN_GRACE_S = 5  # in-flight requests get this long after SIGTERM; docker stop waits 10 s before SIGKILL


@dataclass
class RequestLimits:
    """Limits from the settings, checked by the request model in the API server processes."""

    max_texts: int = 32


# Set from `serving.max_texts_per_request` when the API is built, before LitServe forks its API server processes
# (they inherit it). Pydantic compiles a model's validators once, so a per-run limit is read from here at validation
# time and written into the OpenAPI schema when /docs asks for it.
LIMITS = RequestLimits()

Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS),
    Field(description="text to classify; longer than model.max_length tokens is truncated"),
]


def _document_request(schema: dict[str, Any]) -> None:
    """The schema clients see: one of the two fields, neither of them null, and the configured list limit."""
    for name in ("text", "texts"):
        field = schema["properties"][name]
        field.update(next(choice for choice in field.pop("anyOf") if choice.get("type") != "null"))
        field.pop("default", None)
    schema["properties"]["texts"]["maxItems"] = LIMITS.max_texts
    schema["oneOf"] = [{"required": ["text"]}, {"required": ["texts"]}]


class PredictRequest(BaseModel):
    """Exactly one of `text` (one string) or `texts` (a list of strings)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_request)

    text: Text | None = None
    texts: Annotated[list[Text], Field(min_length=1, description="several texts, answered in order")] | None = None

    @field_validator("texts")
    @classmethod
    def _within_limit(cls, texts: list[str] | None) -> list[str] | None:
        if texts is not None and len(texts) > LIMITS.max_texts:
            raise ValueError(
                f"at most {LIMITS.max_texts} texts per request (serving.max_texts_per_request), got {len(texts)}"
            )
        return texts

    @model_validator(mode="after")
    def _exactly_one(self) -> "PredictRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" (a string) or "texts" (a list of strings)')
        return self


class PredictResponse(BaseModel):
    label: str = Field(description="the most probable class")
    score: float = Field(ge=0, le=1, description="the probability of that class")
    probabilities: dict[str, float] = Field(description="the probability of every class")


class BatchPredictResponse(BaseModel):
    predictions: list[PredictResponse] = Field(description="one per text, in the request's order")


@dataclass(frozen=True)
class Job:
    """One request inside the inference worker: its texts, and whether it asked with `text` (one answer)."""

    texts: list[str]
    single: bool


@dataclass(frozen=True)
class Answer:
    predictions: list[Prediction]
    single: bool


class TextClassifierAPI(ls.LitAPI):  # type: ignore[misc]  # LitAPI is untyped (Any): mypy cannot subclass it
    """Runs in LitServe's inference worker(s): load the predictor, then classify batches of requests."""

    def __init__(
        self, model_dir: Path, max_length: int, max_batch_size: int, batch_timeout: float, cpu_threads: int = 1
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model_dir = model_dir
        self.max_length = max_length
        self.cpu_threads = cpu_threads
        self.predictor: Predictor | None = None

    def setup(self, device: str) -> None:
        # LitServe picks the device (`cpu`, `cuda:0`, ...) from serving.device and workers_per_device.
        if device == "cpu":
            # torch's default (one thread per core in every worker) would oversubscribe the cores that the workers
            # and the API server share; see worker_layout.
            torch.set_num_threads(self.cpu_threads)
        self.predictor = Predictor.load(self.model_dir, device=device, max_length=self.max_length)

    def decode_request(self, request: PredictRequest) -> Job:
        # Already validated by FastAPI; anything raised here would fail every request batched with this one.
        if request.texts is not None:
            return Job(request.texts, single=False)
        return Job([request.text or ""], single=True)

    def predict(self, batch: Any) -> Any:
        # Batched (max_batch_size > 1): a list of jobs in, a list of answers out; otherwise one job, one answer.
        jobs: list[Job] = batch if self.max_batch_size > 1 else [batch]
        if self.predictor is None:
            raise RuntimeError("predict() before setup(): LitServe calls setup() in each worker first")
        predictions = self.predictor.predict([text for job in jobs for text in job.texts])
        answers, start = [], 0
        for job in jobs:
            answers.append(Answer(predictions[start : start + len(job.texts)], job.single))
            start += len(job.texts)
        return answers if self.max_batch_size > 1 else answers[0]

    def encode_response(self, output: Answer) -> PredictResponse | BatchPredictResponse:
        responses = [
            PredictResponse(label=p.label, score=p.score, probabilities=p.probabilities) for p in output.predictions
        ]
        return responses[0] if output.single else BatchPredictResponse(predictions=responses)


def model_metadata(settings: Settings, config: PretrainedConfig) -> dict[str, Any]:
    """What /info reports about the model and the limits a client must respect."""
    metrics_file = settings.serving.model_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return {
        "model_dir": str(settings.serving.model_dir),
        "architecture": config.architectures[0] if config.architectures else None,
        "labels": label_names(config),
        "max_length": settings.model.max_length,
        "max_texts_per_request": settings.serving.max_texts_per_request,
        "max_text_chars": MAX_TEXT_CHARS,
        "max_batch_size": settings.serving.max_batch_size,
        "batch_timeout": settings.serving.batch_timeout,
        "eval_metrics": metrics,
    }


MAX_AUTO_CPU_WORKERS = 4  # each worker holds its own copy of the model in memory


def worker_layout(device: str, workers: int | None, cpu_threads: int | None) -> tuple[int, int]:
    """Inference workers per device and torch threads per worker: the settings, or measured defaults where unset.

    A GPU is kept busy by one worker. On a CPU, separate worker processes with one or a few threads each serve more than
    one worker with all the threads (2 cores: 2x1 gave 96 req/s at 16 clients, 1x2 gave 81; bench/serving.py), so the
    cores are split among up to MAX_AUTO_CPU_WORKERS workers, with one core left to the HTTP side when there are spare.
    """
    cores = len(os.sched_getaffinity(0))
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    workers = workers or (min(cores, MAX_AUTO_CPU_WORKERS) if on_cpu else 1)
    return workers, cpu_threads or max(1, (cores - 1) // workers)


def build_server(settings: Settings) -> ls.LitServer:
    """The LitServer for `serving.model_dir`; raises ModelDirError when that folder holds no classifier."""
    serving = settings.serving
    config = check_model_dir(serving.model_dir)
    LIMITS.max_texts = serving.max_texts_per_request
    workers, cpu_threads = worker_layout(serving.device, serving.workers_per_device, serving.cpu_threads)
    api = TextClassifierAPI(
        model_dir=serving.model_dir.resolve(),
        max_length=settings.model.max_length,
        max_batch_size=serving.max_batch_size,
        batch_timeout=serving.batch_timeout,
        cpu_threads=cpu_threads,
    )
    server = ls.LitServer(
        api,
        accelerator=serving.device,
        workers_per_device=workers,
        model_metadata=model_metadata(settings, config),
    )
    server.uvicorn_graceful_timeout = SHUTDOWN_GRACE_S
    return server


def stop_on_sigterm() -> None:
    """Make SIGTERM take Ctrl-C's path: LitServe stops its workers on KeyboardInterrupt only.

    Without this, `docker stop`, systemd or taskipy's forwarded SIGTERM end the main process and leave the API server
    and inference worker processes running (holding the port). As a container's PID 1, Python ignores SIGTERM unless a
    handler is installed. After the first signal, later ones are ignored so that the cleanup itself runs to the end.
    """
    main_pid = os.getpid()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:  # a forked LitServe process inherited this handler: behave as if it had none
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def stop_children(timeout: float = SHUTDOWN_GRACE_S) -> None:
    """Terminate, then kill, any worker process still alive (e.g. a signal arrived while the model was loading)."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(1)


def main() -> None:
    settings = settings_or_exit()
    serving = settings.serving
    try:
        server = build_server(settings)
    except ModelDirError as error:
        print(f"error: serving.model_dir: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    stop_on_sigterm()
    try:
        # No client.py dropped into the working directory (and none attempted in a read-only image).
        server.run(host=serving.host, port=serving.port, generate_client_file=False)
    except KeyboardInterrupt:
        pass
    finally:
        stop_children()
    # Every worker is stopped; skip the interpreter's teardown of torch and friends (seconds on a busy machine).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
