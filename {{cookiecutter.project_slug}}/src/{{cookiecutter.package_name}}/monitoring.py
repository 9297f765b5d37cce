"""Prometheus metrics for the server at GET /metrics: requests by status, latency, and the batches the model runs.

The server is several processes (API servers, inference workers), so prometheus_client runs in multiprocess mode: each
process writes its samples to files in one folder (PROMETHEUS_MULTIPROC_DIR), which /metrics adds up. prometheus_client
reads that variable when it is imported, so it is imported only after `metrics_dir()` set it, never at module level.

- `RequestMetrics`, an ASGI middleware in each API server process: `http_requests_total` by path (the route's;
  `unmatched` for URLs no route serves), method and status, and the `http_request_duration_seconds` histogram by path.
- `BatchMetrics`, in each inference worker: `inference_batch_size` (texts per forward pass) and
  `inference_batch_seconds`. Recorded where the batch runs rather than through a LitServe Logger, whose queue would
  cost an inter-process call per batch and a process of its own.
- `metrics_response()`, the exposition for the /metrics route, which serve.py guards with LitServe's own API-key check.
"""

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import Response

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNMATCHED = "unmatched"  # the path label of requests to a URL no route serves

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@contextlib.contextmanager
def metrics_dir() -> Iterator[Path]:
    """A fresh folder for this server's samples, named in PROMETHEUS_MULTIPROC_DIR for every process it starts.

    A temporary folder, removed afterwards; or the folder PROMETHEUS_MULTIPROC_DIR names, created if need be, with the
    sample files of an earlier server removed (they would be added to this one's); nothing else in it is touched.
    A folder that cannot be used ends the program with one line and exit code 2."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        try:
            Path(given).mkdir(parents=True, exist_ok=True)
            for samples in Path(given).glob("*.db"):  # prometheus_client's files
                samples.unlink()
        except OSError as error:
            print(f"error: {MULTIPROC_ENV}: cannot use {given}: {error.strerror or error}", file=sys.stderr)
            raise SystemExit(2) from None
        yield Path(given)
        return
    with tempfile.TemporaryDirectory(prefix="serve-metrics-", ignore_cleanup_errors=True) as folder:
        os.environ[MULTIPROC_ENV] = folder
        try:
            yield Path(folder)
        finally:
            del os.environ[MULTIPROC_ENV]


class RequestMetrics:
    """Counts every HTTP request by path, method and status, and times it (ASGI middleware, API server processes)."""

    def __init__(self, app: ASGIApp) -> None:
        from prometheus_client import Counter, Histogram  # noqa: PLC0415 - after PROMETHEUS_MULTIPROC_DIR is set

        self.app = app
        # registry=None: in multiprocess mode the samples live in files, which metrics_response() collects.
        self.requests = Counter("http_requests", "HTTP requests answered", ["path", "method", "status"], registry=None)
        self.latency = Histogram(
            "http_request_duration_seconds", "time to answer", ["path"], buckets=LATENCY_BUCKETS, registry=None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app fails before answering
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The route the request matched, not its URL: a scanner's random paths must not each add a series.
            path = getattr(scope.get("route"), "path", UNMATCHED)
            self.requests.labels(path=path, method=scope["method"], status=str(status)).inc()
            self.latency.labels(path=path).observe(time.perf_counter() - started)


class BatchMetrics:
    """The size and time of each forward pass (made in the inference worker, after PROMETHEUS_MULTIPROC_DIR is set)."""

    def __init__(self) -> None:
        from prometheus_client import Histogram  # noqa: PLC0415 - see the module docstring

        self.size = Histogram("inference_batch_size", "texts per forward pass", buckets=BATCH_BUCKETS, registry=None)
        self.seconds = Histogram(
            "inference_batch_seconds", "time of one forward pass", buckets=LATENCY_BUCKETS, registry=None
        )

    def observe(self, texts: int, seconds: float) -> None:
        self.size.observe(texts)
        self.seconds.observe(seconds)


def metrics_response() -> Response:
    """Every process's samples in the Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess  # noqa: PLC0415

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
