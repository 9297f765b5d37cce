"""`uv run serve`: the fine-tuned classifier as a LitServe REST API (POST /predict, /health, /info, /docs).

Requests are validated by FastAPI in the API server process (a bad body is a 422 there and never reaches the model);
the inference worker batches concurrent requests (`serving.max_batch_size`, `serving.batch_timeout`) into one forward
pass. Set LIT_SERVER_API_KEY to require an `X-API-Key` header on every endpoint, /health included.

No `from __future__ import annotations` here: LitServe hands the annotations of `decode_request`/`encode_response`
to FastAPI as objects, and string annotations would turn the request body into a query parameter.
"""

import json
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Annotated, Any

import litserve as ls
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from litserve.utils import WorkerSetupStatus
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from transformers import PretrainedConfig
from transformers.utils import logging as transformers_logging

from {{ cookiecutter.package_name }}.launch import SERVE_ABOUT, SERVE_SECTIONS, SERVE_STARTING
from {{ cookiecutter.package_name }}.lifetime import (
    children_leave_stops_to_this_process,
    end_with_parent,
    exit_on_interrupt,
    forks_follow_this_process,
    interrupt_on_sigterm,
    raise_if_stopping,
    stopping,
)
from {{ cookiecutter.package_name }}.monitoring import BatchMetrics, RequestMetrics, metrics_dir, metrics_response
from {{ cookiecutter.package_name }}.predictor import (
    METRICS_FILE,
    ModelDirError,
    Prediction,
    Predictor,
    check_finite_weights,
    check_model_dir,
    label_names,
    resolve_device,
    resolve_precision,
)
from {{ cookiecutter.package_name }}.settings import Precision, Settings, settings_or_exit

MAX_TEXT_CHARS = 100_000  # far beyond any model's max_length; bounds the tokenizer's work per text
SHUTDOWN_GRACE_S = 5  # in-flight requests get this long after SIGTERM; docker stop waits 10 s before SIGKILL
RESEND_SIGTERM_S = 0.5  # a child still alive is sent SIGTERM again this often while it has time (stop_processes)
ECHO_CHARS = 40  # a 422 shows this much of the offending input, not the whole request back


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
    # Spelled out (not \S): regex engines disagree on which Unicode characters are spaces, and the schema's users
    # (schemathesis, client generators) must accept and refuse exactly what the server does. Anchored, so that schema
    # tools do not fold it into the length limits (a 100,000-fold repetition that takes them seconds to reason about).
    StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"^[ \t\n\r\f\v]*[^ \t\n\r\f\v]"),
    Field(description="text to classify, not only spaces; beyond model.max_length tokens it is truncated"),
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

    @field_validator("text", "texts", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # the schema says a string (or list): null is not one; leave the field out instead
            raise ValueError("must not be null")
        return value

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
        self,
        model_dir: Path,
        max_length: int,
        max_batch_size: int,
        batch_timeout: float,
        *,
        cpu_threads: int = 1,
        precision: Precision = "fp32",
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model_dir = model_dir
        self.max_length = max_length
        self.cpu_threads = cpu_threads
        self.precision = precision
        self.predictor: Predictor | None = None
        self.batch_metrics: BatchMetrics | None = None

    def setup(self, device: str) -> None:
        # LitServe picks the device (`cpu`, `cuda:0`, ...) from serving.device and workers_per_device.
        if multiprocessing.parent_process() is not None:  # in LitServe's worker process, not called in-process
            # A worker ignores Ctrl-C and SIGTERM from its start (launch_inference_worker): the server kills it, after
            # the requests in flight are answered, and the kernel kills it when the server is killed outright.
            end_with_parent(signal.SIGKILL)
            # No weight-loading bar: one per worker in the server's log, and its tqdm lock is a semaphore that a worker
            # stopped by LitServe never releases (the resource tracker then warns of leaked semaphores at every stop).
            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # unannotated in transformers
        if device == "cpu":
            # torch's default (one thread per core in every worker) would oversubscribe the cores that the workers
            # and the API server share; see worker_layout.
            torch.set_num_threads(self.cpu_threads)
        self.batch_metrics = BatchMetrics()
        self.predictor = Predictor.load(
            self.model_dir, device=device, max_length=self.max_length, precision=self.precision
        )

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
        texts = [text for job in jobs for text in job.texts]
        started = time.perf_counter()
        predictions = self.predictor.predict(texts)
        if self.batch_metrics is not None:
            self.batch_metrics.observe(len(texts), time.perf_counter() - started)
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


def model_metadata(settings: Settings, config: PretrainedConfig, device: str, precision: Precision) -> dict[str, Any]:
    """What /info reports about the model and the limits a client must respect."""
    return {
        "model_dir": str(settings.serving.model_dir),
        "architecture": config.architectures[0] if config.architectures else None,
        "device": device,
        "precision": precision,
        "labels": label_names(config),
        "max_length": settings.model.max_length,
        "max_texts_per_request": settings.serving.max_texts_per_request,
        "max_text_chars": MAX_TEXT_CHARS,
        "max_batch_size": settings.serving.max_batch_size,
        "batch_timeout": settings.serving.batch_timeout,
        "eval_metrics": read_metrics(settings.serving.model_dir / METRICS_FILE),
    }


def read_metrics(path: Path) -> dict[str, Any] | None:
    """metrics.json as train-local wrote it; None when absent or unreadable. NaN (older files) reads as null."""
    try:
        metrics = json.loads(path.read_text(), parse_constant=lambda _constant: None)
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _echo(value: Any) -> Any:
    """At most ECHO_CHARS of a rejected input, in a form any JSON response can carry (or nothing)."""
    if isinstance(value, str):
        shown = value[:ECHO_CHARS].encode("utf-8", "replace").decode()
        return shown + ("…" if len(value) > ECHO_CHARS else "")
    if value is None or isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return None


def _safe(text: str) -> str:
    return text.encode("utf-8", "replace").decode()


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """422 like FastAPI's own, but echoing only a short prefix of each offending input (and always serialisable)."""
    if not isinstance(error, RequestValidationError):  # registered for that type only
        raise error
    details = []
    for problem in error.errors():
        detail: dict[str, Any] = {
            "loc": [part if isinstance(part, int) else _safe(str(part)) for part in problem.get("loc", ())],
            "msg": _safe(str(problem.get("msg", ""))),
            "type": _safe(str(problem.get("type", ""))),
        }
        if (shown := _echo(problem.get("input"))) is not None:
            detail["input"] = shown
        if isinstance(problem.get("ctx"), dict):
            detail["ctx"] = {_safe(str(key)): _safe(str(value))[:200] for key, value in problem["ctx"].items()}
        details.append(detail)
    return JSONResponse(status_code=422, content={"detail": details})


ERROR_BODY = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
OTHER_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body could not be read (e.g. it is not UTF-8)"},
    401: {"description": "LIT_SERVER_API_KEY is set and the X-API-Key header is missing or wrong"},
    504: {"description": "the model did not answer in time (LitServe's request timeout)"},
}


def document_api(app: FastAPI) -> None:
    """Every status /predict can answer is in the OpenAPI document, and 422s echo little of the input."""
    app.add_exception_handler(RequestValidationError, validation_error)
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path == "/predict":
            for status, response in OTHER_RESPONSES.items():
                route.responses[status] = {**response, "content": {"application/json": {"schema": ERROR_BODY}}}


MAX_AUTO_CPU_WORKERS = 4  # each worker holds its own copy of the model in memory


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's or taskset's limit) where the OS has one
    (Linux), else every core (macOS, Windows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_layout(device: str, workers: int | None, cpu_threads: int | None) -> tuple[int, int]:
    """Inference workers per device and torch threads per worker on a resolved `device` (cpu, cuda, cuda:N): the
    settings, or measured defaults where unset.

    A GPU is kept busy by one worker. On a CPU, separate worker processes with one or a few threads each serve more than
    one worker with all the threads (2 cores: 2x1 gave 96 req/s at 16 clients, 1x2 gave 81; the template's
    bench/serving.py), so the cores are split among up to MAX_AUTO_CPU_WORKERS workers, with one core left to the HTTP
    side when there are spare.
    """
    cores = usable_cores()
    workers = workers or (min(cores, MAX_AUTO_CPU_WORKERS) if device == "cpu" else 1)
    return workers, cpu_threads or max(1, (cores - 1) // workers)


MONITOR_THREAD = "litserve-monitoring"  # LitServer's thread that watches the inference workers


class QuietMonitorWhenStopping(logging.Filter):
    """Drops what LitServe's worker monitor logs once a stop was asked for (Ctrl-C, SIGTERM).

    The monitor wakes every 2 s. During a stop it can wake after LitServe has stopped the workers, take them for
    crashed ones ("Worker ... died") and run a second shutdown alongside the first, or after the manager process has
    gone, and log a ConnectionResetError traceback. Neither says anything about the stop itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (stopping() and record.threadName == MONITOR_THREAD)


class TextClassifierServer(ls.LitServer):  # type: ignore[misc]  # LitServer is untyped (Any), as LitAPI is
    """LitServer whose inference workers leave Ctrl-C and SIGTERM to this process, which stops them once the HTTP
    processes have answered the requests in flight; LitServe would restart a worker from its monitor thread, where no
    signal disposition can be set, but worker restarts are off here."""

    started = False  # a worker has loaded the model and the HTTP side is starting: a stop now is no longer early
    inference_workers: list[BaseProcess]  # set by LitServer.run

    def launch_inference_worker(self, lit_api: ls.LitAPI) -> list[multiprocessing.Process]:
        with children_leave_stops_to_this_process():
            processes: list[multiprocessing.Process] = super().launch_inference_worker(lit_api)
        return processes

    def _perform_graceful_shutdown(
        self, manager: Any, uvicorn_workers: dict[str, Any], shutdown_reason: str = "normal"
    ) -> None:
        """LitServe's stop (a private step of LitServer.run, at its locked version), in order: the HTTP processes answer
        the requests in flight (all at once, not one after the other), then the workers, which ignore SIGTERM, are
        killed, then LitServe closes the rest (the manager last). The stop tests fail if LitServe stops calling it."""
        http = {name: worker for name, worker in uvicorn_workers.items() if isinstance(worker, BaseProcess)}
        stop_processes(list(http.values()), self.uvicorn_graceful_timeout)
        stop_processes(self.inference_workers, 0)  # nothing left to answer
        self.inference_workers = []
        threads = {name: worker for name, worker in uvicorn_workers.items() if name not in http}
        super()._perform_graceful_shutdown(manager, threads, shutdown_reason)

    def verify_worker_status(self) -> None:
        """LitServe's wait for the first worker to load the model, which also ends at a stop whose KeyboardInterrupt
        was dropped (seen while the workers were spawned): the server would otherwise start with Ctrl-C ignored."""
        while not any(status == WorkerSetupStatus.READY for status in self.workers_setup_status.values()):
            if any(status == WorkerSetupStatus.ERROR for status in self.workers_setup_status.values()):
                raise RuntimeError("One or more workers failed to start. Shutting down LitServe")
            raise_if_stopping()
            time.sleep(0.05)
        self.started = True


class ServingError(Exception):
    """The server cannot start as set up; the message names the setting."""


def check_port(host: str, port: int) -> None:
    """That the server can listen on host:port, bound as uvicorn binds (a port a closed connection lingers on is free);
    otherwise uvicorn would say only "Address already in use", after the model loaded, with exit code 3."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServingError(f"serving.port: cannot listen on {host}:{port}: {error.strerror or error}") from None


def build_server(settings: Settings) -> TextClassifierServer:
    """The LitServer for `serving.model_dir`; raises ServingError naming the setting that stops it."""
    serving = settings.serving
    check_port(serving.host, serving.port)
    try:
        config = check_model_dir(serving.model_dir)
        check_finite_weights(serving.model_dir)
    except ModelDirError as error:
        raise ServingError(f"serving.model_dir: {error}") from error
    try:
        device = resolve_device(serving.device)
        precision = resolve_precision(serving.precision, device)
    except (ModelDirError, ValueError) as error:
        setting = "serving.device" if isinstance(error, ModelDirError) else "serving.precision"
        raise ServingError(f"{setting}: {error}") from error
    LIMITS.max_texts = serving.max_texts_per_request
    workers, cpu_threads = worker_layout(device, serving.workers_per_device, serving.cpu_threads)
    api = TextClassifierAPI(
        model_dir=serving.model_dir.resolve(),
        max_length=settings.model.max_length,
        max_batch_size=serving.max_batch_size,
        batch_timeout=serving.batch_timeout,
        cpu_threads=cpu_threads,
        precision=precision,
    )
    server = TextClassifierServer(
        api,
        accelerator=serving.device,
        workers_per_device=workers,
        model_metadata=model_metadata(settings, config, device, precision),
        middlewares=[RequestMetrics],
    )
    # Prometheus scrapes this; the same API-key check as LitServe's own endpoints (X-API-Key, LIT_SERVER_API_KEY).
    server.app.add_api_route(
        "/metrics", metrics_response, methods=["GET"], dependencies=[Depends(server.setup_auth(api))]
    )
    server.uvicorn_graceful_timeout = SHUTDOWN_GRACE_S
    document_api(server.app)
    return server


def stop_processes(processes: list[BaseProcess], grace_s: float) -> None:
    """Terminate them all, again every RESEND_SIGTERM_S, then kill those still alive after `grace_s`. A child that
    takes SIGTERM from this process alone (forks_follow_this_process) loses ours when it arrives while a stray one is
    still pending: Linux keeps one pending SIGTERM, not two, and the child reads the stray's sender."""
    deadline = time.monotonic() + grace_s
    while (alive := [process for process in processes if process.is_alive()]) and time.monotonic() < deadline:
        for process in alive:
            process.terminate()
        wait([process.sentinel for process in alive], timeout=min(RESEND_SIGTERM_S, deadline - time.monotonic()))
    for process in alive:
        process.kill()
        process.join(1)


def stop_children(grace_s: float) -> None:
    """Stop every child process still alive (e.g. a signal arrived while the model was loading): the inference workers
    first, LitServe's manager process last, since a worker that outlived the manager would lose its queues mid-call and
    print a traceback."""
    children = multiprocessing.active_children()
    managers = [child for child in children if child.name.startswith("SyncManager")]  # multiprocessing's naming
    stop_processes([child for child in children if child not in managers], grace_s)
    stop_processes(managers, grace_s)


def main() -> None:
    end_with_parent()
    # LitServe stops its workers on KeyboardInterrupt only; and `docker stop` while the model loads ends it at once.
    interrupt_on_sigterm()
    with exit_on_interrupt(SERVE_STARTING):
        settings = settings_or_exit(about=SERVE_ABOUT, sections=SERVE_SECTIONS)
        try:
            server = build_server(settings)
        except ServingError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        raise_if_stopping()  # a stop a finaliser dropped while all this loaded: signals are ignored from then on
    serving = settings.serving
    logging.getLogger("litserve.server").addFilter(QuietMonitorWhenStopping())
    forks_follow_this_process()
    # Set before the server starts its processes: each one writes its metrics there.
    with metrics_dir():
        try:
            # No client.py dropped into the working directory (and none attempted in a read-only image).
            server.run(host=serving.host, port=serving.port, generate_client_file=False)
        except KeyboardInterrupt:
            pass
        finally:
            # Before the server started, no request waits for an answer: the workers, which ignore SIGTERM, are
            # killed at once.
            stop_children(SHUTDOWN_GRACE_S if server.started else 0)
    if not server.started:  # stopped while the workers loaded the model
        print(f"\nerror: interrupted {SERVE_STARTING}", file=sys.stderr)
    # Every worker is stopped; skip the interpreter's teardown of torch and friends (seconds on a busy machine).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if server.started else 130)


if __name__ == "__main__":
    main()
