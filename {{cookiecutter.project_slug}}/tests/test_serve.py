"""The LitServe API: request validation and the worker's batching in-process, then the real `serve` command on a
loopback port with a model trained by `train-local`: answers, batching under concurrency, bad input, auth, fuzzing
of its OpenAPI schema, and a SIGTERM that leaves no process behind."""

import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.predictor import ModelDirError, check_finite_weights
from {{ cookiecutter.package_name }}.serve import (
    LIMITS,
    SHUTDOWN_GRACE_S,
    Answer,
    BatchPredictResponse,
    PredictRequest,
    PredictResponse,
    TextClassifierAPI,
    stop_processes,
    worker_layout,
)

from tests.conftest import (
    BIN,
    PROJECT,
    STOP_TIMEOUT_S,
    ctrl_c_while_starting,
    free_port,
    group_members,
    port_is_free,
    run,
    send_and_wait,
    start_in_own_group,
    uv_run,
)
from tests.tiny import build_diverging_classifier, build_tiny_classifier, reviews

STARTUP_TIMEOUT_S = 300  # importing torch in three processes on a busy 2-core CI runner
MAX_TEXTS = 4
MULTIPART = b"--x\r\nContent-Disposition: form-data; name=text\r\n\r\nthe film was great\r\n--x--\r\n"


# --- in-process: the request model and the worker's batching, no server -----------------------------------------


@pytest.fixture
def limit_of_three(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LIMITS, "max_texts", 3)


@pytest.mark.usefixtures("limit_of_three")
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of"),
        ({"text": "a", "texts": ["b"]}, "exactly one of"),
        ({"text": None}, "must not be null"),
        ({"text": "x", "texts": None}, "must not be null"),
        ({"text": ""}, "at least 1 character"),
        ({"text": " \t\n"}, "should match pattern"),
        ({"text": "\ud800"}, "valid string"),  # a lone surrogate, which JSON can spell
        ({"text": 5}, "valid string"),
        ({"texts": []}, "at least 1 item"),
        ({"texts": ["a", 1]}, "valid string"),
        ({"texts": ["a", "b", "c", "d"]}, "at most 3 texts per request"),
        ({"text": "a", "language": "en"}, "Extra inputs are not permitted"),
        ({"text": "x" * 100_001}, "at most 100000 characters"),
    ],
)
def test_request_model_refuses(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PredictRequest.model_validate(body)


@pytest.mark.usefixtures("limit_of_three")
def test_request_model_accepts_and_documents_the_limit() -> None:
    assert PredictRequest.model_validate({"text": "  good  "}).text == "  good  "  # as sent: the schema's length
    assert PredictRequest.model_validate({"texts": ["a", "b", "c"]}).texts == ["a", "b", "c"]
    schema = PredictRequest.model_json_schema()
    assert schema["properties"]["texts"]["maxItems"] == 3
    assert schema["properties"]["text"]["type"] == "string"  # not nullable: a null is refused (above)
    assert schema["oneOf"] == [{"required": ["text"]}, {"required": ["texts"]}]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("max_batch_size", [1, 4])
def test_worker_answers_each_request_of_a_batch(tiny_checkpoint: Path, max_batch_size: int) -> None:
    api = TextClassifierAPI(tiny_checkpoint, max_length=64, max_batch_size=max_batch_size, batch_timeout=0)
    api.setup("cpu")
    requests = [PredictRequest(text="a great film"), PredictRequest(texts=["dull", "superb plot", "weak cast"])]
    jobs = [api.decode_request(request) for request in requests]
    if max_batch_size > 1:  # LitServe's batched loop: one predict call for the whole batch
        answers: list[Answer] = api.predict(api.batch(jobs))
    else:  # its single loop: one predict call per request
        answers = [api.predict(job) for job in jobs]
    single, batch = (api.encode_response(answer) for answer in answers)
    assert isinstance(single, PredictResponse)
    assert isinstance(batch, BatchPredictResponse)
    assert len(batch.predictions) == 3
    assert api.predictor is not None
    expected = api.predictor.predict(["dull", "superb plot", "weak cast"])
    for answered, alone in zip(batch.predictions, expected, strict=True):
        assert answered.probabilities == pytest.approx(alone.probabilities, abs=1e-5)


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, (1, 1)), (2, (2, 1)), (4, (4, 1)), (8, (4, 1)), (32, (4, 7))],
)
def test_cpu_workers_split_the_cores(monkeypatch: pytest.MonkeyPatch, cores: int, expected: tuple[int, int]) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert worker_layout("cpu", None, None) == expected  # (workers, torch threads each)
    assert worker_layout("cpu", 2, 5) == (2, 5)  # the settings win


def test_cores_without_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    # macOS and Windows have no sched_getaffinity: every core counts.
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert worker_layout("cpu", None, None) == (3, 1)


def test_one_worker_per_gpu_unless_set() -> None:
    assert worker_layout("cuda", None, None)[0] == 1
    assert worker_layout("cuda", 2, None)[0] == 2


# --- the real server ------------------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, signum: int = signal.SIGTERM, *, to_group: bool = False) -> list[str]:
        """SIGTERM to the leader only (as docker stop or systemd send it); the processes still alive after 10 s."""
        return send_and_wait(self.process, signum, to_group=to_group)

    def stop_cleanly(self, signum: int, *, to_group: bool = False) -> None:
        """However it is stopped: within 10 s none of its processes is left, the port is free, and no traceback."""
        left = self.stop(signum, to_group=to_group)
        assert not left, f"still running {STOP_TIMEOUT_S} s after {signal.Signals(signum).name}: {left}"
        assert port_is_free(self.port)
        log = self.log.read_text(errors="replace")
        assert "Traceback" not in log
        # Nor a line that reads as a fault: a LitServe error (a stopped worker taken for a crashed one), or semaphores
        # the resource tracker found leaked.
        assert not [line for line in log.splitlines() if " - ERROR - " in line or "leaked semaphore" in line], log


def start_server(
    model_dir: Path,
    log: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    program: list[str] | None = None,
) -> Server:
    """`program` (by default the `serve` console script itself) in its own process group, once healthy."""
    port = free_port()
    arguments = ["--serving.model_dir", str(model_dir), "--serving.port", str(port), *flags]
    process = start_in_own_group([*(program or [str(BIN / "serve")]), *arguments], log, env)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    headers = {"X-API-Key": (env or {}).get("LIT_SERVER_API_KEY", "")}
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop(signal.SIGKILL, to_group=True)
            pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/health", headers=headers, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.stop(signal.SIGKILL, to_group=True)
    pytest.fail(f"no /health within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    flags = ["--serving.max_texts_per_request", str(MAX_TEXTS)]
    running = start_server(trained_model, log, *flags, "--model.max_length", "32", program=uv_run("serve"))
    yield running
    running.stop_cleanly(signal.SIGTERM)  # to `uv run serve` alone, as docker stop or systemd send it


def predict(server: Server, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", json=body, timeout=30)


@pytest.mark.slow
def test_single_text(server: Server) -> None:
    response = predict(server, {"text": "the film was superb and the cast felt brilliant"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["label"] == "1"  # train-local keeps the dataset's label names
    assert answer["score"] == answer["probabilities"]["1"] > 0.5
    assert set(answer["probabilities"]) == {"0", "1"}


@pytest.mark.slow
def test_batch_of_texts_in_order(server: Server) -> None:
    rows = reviews(MAX_TEXTS, seed=11)
    response = predict(server, {"texts": [text for text, _ in rows]})
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == [str(label) for _, label in rows]


@pytest.mark.slow
def test_concurrent_requests_each_get_their_own_answer(server: Server) -> None:
    rows = reviews(48, seed=3)
    sequential = {text: predict(server, {"text": text}).json() for text, _ in rows[:8]}

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            singles = [client.post("/predict", json={"text": text}) for text, _ in rows]
            batches = [
                client.post("/predict", json={"texts": [t for t, _ in rows[i : i + 3]]}) for i in range(0, 12, 3)
            ]
            return await asyncio.gather(*singles, *batches)

    responses = asyncio.run(all_at_once())
    assert [r.status_code for r in responses] == [200] * len(responses)
    singles, batches = responses[: len(rows)], responses[len(rows) :]
    assert [r.json()["label"] for r in singles] == [str(label) for _, label in rows]
    for response, (text, _) in zip(singles, rows[:8], strict=False):
        assert response.json()["probabilities"] == pytest.approx(sequential[text]["probabilities"], abs=1e-5)
    batched_labels = [p["label"] for r in batches for p in r.json()["predictions"]]
    assert batched_labels == [str(label) for _, label in rows[:12]]


@pytest.mark.slow
def test_text_far_over_max_length_is_truncated(server: Server) -> None:
    long_text = "the film was superb and the cast felt brilliant " * 2000  # ~18,000 tokens; max_length is 32
    response = predict(server, {"text": long_text})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "1"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        (b"not json", "application/json", "JSON decode error"),
        (b'{"text": "cut', "application/json", "JSON decode error"),
        (b"", "application/json", "Field required"),
        (b'{"text": 5}', "application/json", "valid string"),
        (b"{}", "application/json", "exactly one of"),
        (b'{"txt": "typo"}', "application/json", "Extra inputs are not permitted"),
        (b'{"text": ""}', "application/json", "at least 1 character"),
        (b'{"texts": ["a", "b", "c", "d", "e"]}', "application/json", f"at most {MAX_TEXTS} texts per request"),
        (b'["a list"]', "application/json", "valid dictionary"),
        (b"the film was great", "text/plain", "valid dictionary"),
        (b"text=great", "application/x-www-form-urlencoded", "valid dictionary"),
        (MULTIPART, "multipart/form-data; boundary=x", "valid dictionary"),
    ],
    ids=["not-json", "cut-json", "empty-body", "wrong-type", "no-field", "unknown-field", "empty-text", "too-many",
         "json-list", "plain-text", "form", "multipart"],
)  # fmt: skip
def test_bad_input_is_a_clear_422(server: Server, content: bytes, content_type: str, message: str) -> None:
    response = httpx.post(f"{server.url}/predict", content=content, headers={"content-type": content_type}, timeout=30)
    assert response.status_code == 422, response.text
    assert message in json.dumps(response.json()["detail"])
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    assert predict(server, {"text": "still serving"}).status_code == 200


@pytest.mark.slow
def test_health_info_and_docs(server: Server, trained_model: Path) -> None:
    health = httpx.get(f"{server.url}/health", timeout=5)
    assert (health.status_code, health.text) == (200, "ok")
    info = httpx.get(f"{server.url}/info", timeout=5).json()["model"]
    assert (info["device"], info["precision"]) == ("cpu", "fp32")  # serving.precision auto, on a CPU
    assert info["labels"] == ["0", "1"]
    assert info["model_dir"] == str(trained_model)
    assert info["max_texts_per_request"] == MAX_TEXTS
    assert info["eval_metrics"]["accuracy"] >= 0.9
    docs = httpx.get(f"{server.url}/docs", timeout=5)
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    openapi = httpx.get(f"{server.url}/openapi.json", timeout=5).json()
    request_schema = openapi["components"]["schemas"]["PredictRequest"]
    assert request_schema["properties"]["texts"]["maxItems"] == MAX_TEXTS
    answers = openapi["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {choice["$ref"].rsplit("/", 1)[1] for choice in answers["anyOf"]} == {
        "PredictResponse",
        "BatchPredictResponse",
    }
    assert not (PROJECT / "client.py").exists()  # LitServe's generated client is switched off


@pytest.mark.slow
def test_fuzzing_the_schema_finds_no_server_error_and_no_disagreement(server: Server) -> None:
    """1,200 schemathesis requests, valid and invalid bodies: never a 5xx; every status, content type and body as the
    OpenAPI document says; what the schema allows is accepted and what it forbids is refused."""
    operation = schemathesis.openapi.from_url(f"{server.url}/openapi.json")["/predict"]["POST"]
    statuses: list[int] = []
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=600, deadline=None, database=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def send(case: schemathesis.Case[Any]) -> None:
            response = case.call_and_validate(base_url=server.url, timeout=30)
            statuses.append(response.status_code)

        send()
    assert len(statuses) >= 1000  # hypothesis may stop a little short of max_examples, never far
    assert 200 in statuses  # valid bodies were generated and answered
    assert any(400 <= status < 500 for status in statuses)
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"text": NaN}', 422),  # json.loads reads NaN; the echo of it must not break the 422 itself
        (b'{"text": 1e999}', 422),
        (b'{"text": "\\ud800"}', 422),
        (b'{"texts": [' + b'"a", ' * 50 + b'"b"]}', 422),
        (b'{"text": "\xff\xfe not UTF-8"}', 400),
        (b"[" * 100_000 + b"]" * 100_000, 400),  # nesting deeper than the JSON parser goes
    ],
    ids=["nan", "infinity", "lone-surrogate", "too-many-texts", "not-utf-8", "deep-nesting"],
)  # fmt: skip
def test_odd_bodies_get_a_documented_4xx(server: Server, content: bytes, status: int) -> None:
    response = httpx.post(f"{server.url}/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text[:500]
    documented = httpx.get(f"{server.url}/openapi.json", timeout=5).json()["paths"]["/predict"]["post"]["responses"]
    assert str(status) in documented
    assert "detail" in response.json()


@pytest.mark.slow
def test_a_422_echoes_only_a_short_prefix_of_the_input(server: Server) -> None:
    huge = "x" * 240_000  # over the 100,000-character limit
    response = predict(server, {"text": huge})
    assert response.status_code == 422
    assert len(response.content) < 1_000, f"{len(response.content)} bytes came back"
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "text"]
    assert detail["input"] == "x" * 40 + "…"


def samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, labels): value}."""
    response = httpx.get(f"{server.url}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_metrics_count_requests_latency_and_batches(server: Server) -> None:
    """Known traffic, one request at a time (so each is a batch of its own): the counters move by exactly that much."""
    ok = (("method", "POST"), ("path", "/predict"), ("status", "200"))
    bad = (("method", "POST"), ("path", "/predict"), ("status", "422"))
    timed = (("path", "/predict"),)
    before = samples(server)
    for body in ({"text": "the film was great"}, {"text": "dull"}, {"texts": ["superb", "awful", "fine"]}, {"x": 1}):
        predict(server, body)
    for path in ("/no-such-page", "/wp-login.php"):
        assert httpx.get(f"{server.url}{path}", timeout=5).status_code == 404
    after = samples(server)

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert moved("http_requests_total", ok) == 3
    assert moved("http_requests_total", bad) == 1
    assert moved("http_request_duration_seconds_count", timed) == 4
    assert moved("http_request_duration_seconds_sum", timed) > 0
    assert moved("inference_batch_size_count") == 3  # the 422 never reaches the model
    assert moved("inference_batch_size_sum") == 5
    assert moved("inference_batch_seconds_count") == 3
    # URLs no route serves share one series, whatever they are.
    assert moved("http_requests_total", (("method", "GET"), ("path", "unmatched"), ("status", "404"))) == 2
    assert not [labels for _, labels in after if ("path", "/no-such-page") in labels]


@pytest.mark.slow
def test_every_status_the_api_answers_is_documented(server: Server) -> None:
    documented = httpx.get(f"{server.url}/openapi.json", timeout=5).json()["paths"]["/predict"]["post"]["responses"]
    assert set(documented) == {"200", "400", "401", "422", "504"}
    # The README's status table (rows "| `NNN` | when |") says the same.
    in_readme = re.findall(r"^\| `(\d{3})` \|", (PROJECT / "README.md").read_text(), flags=re.MULTILINE)
    assert sorted(in_readme) == sorted(documented)


def ignores_ctrl_c(pid: int) -> bool | None:
    """Whether the process ignores SIGINT, from its mask of ignored signals (bit n-1 for signal n); None once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, flags=re.MULTILINE)
    assert found, status
    return bool(int(found[1], 16) >> (signal.SIGINT - 1) & 1)


def inference_workers(group: int) -> list[int]:
    """The processes of the group that multiprocessing spawned to run `spawn_main`: LitServe's inference workers."""
    pids = []
    for member in group_members(group):
        pid = int(member.split(maxsplit=1)[0])
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids


@pytest.mark.slow
def test_inference_workers_ignore_ctrl_c_from_their_first_instruction(trained_model: Path, tmp_path: Path) -> None:
    """A terminal sends Ctrl-C to the whole group, and a worker still importing torch would answer it with a traceback:
    each worker is looked at as soon as it exists, seconds before its imports are done."""
    arguments = ["--serving.model_dir", str(trained_model), "--serving.port", str(free_port())]
    arguments += ["--serving.workers_per_device", "2"]
    leader = start_in_own_group(uv_run("serve", *arguments), tmp_path / "serve.log")
    seen: dict[int, bool | None] = {}
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while len(seen) < 2 and leader.poll() is None and time.monotonic() < deadline:
            for pid in inference_workers(leader.pid):
                if pid not in seen:
                    seen[pid] = ignores_ctrl_c(pid)
            time.sleep(0.02)
    finally:
        left = send_and_wait(leader, signal.SIGINT, to_group=True)
    assert len(seen) == 2, (seen, (tmp_path / "serve.log").read_text()[-2000:])
    assert all(seen.values()), seen
    assert not left, left


@pytest.mark.slow
@pytest.mark.parametrize("when", [0.5, 1.5, "Uvicorn running on"])  # the last: while the workers load the model
def test_ctrl_c_while_the_server_starts_is_one_line(when: float | str, trained_model: Path, tmp_path: Path) -> None:
    """Ctrl-C in the seconds before the server answers, while torch and the model load."""
    arguments = ["--serving.model_dir", str(trained_model), "--serving.port", str(free_port())]
    code, errors = ctrl_c_while_starting(uv_run("serve", *arguments), when, tmp_path / "serve.log")
    assert errors == ["error: interrupted before the server started"]
    assert code == 130


@pytest.mark.slow
def test_api_key_protects_every_endpoint_and_ctrl_c_stops_everything(trained_model: Path, tmp_path: Path) -> None:
    key = "test-key-123"
    running = start_server(
        trained_model, tmp_path / "serve.log", env={"LIT_SERVER_API_KEY": key}, program=uv_run("serve")
    )
    try:
        text = {"text": "the film was superb"}
        assert httpx.post(f"{running.url}/predict", json=text, timeout=30).status_code == 401
        wrong = {"X-API-Key": "nope"}
        assert httpx.post(f"{running.url}/predict", json=text, headers=wrong, timeout=30).status_code == 401
        assert httpx.get(f"{running.url}/health", timeout=5).status_code == 401  # probes must send the key too
        good = {"X-API-Key": key}
        assert httpx.post(f"{running.url}/predict", json=text, headers=good, timeout=30).status_code == 200
        assert httpx.get(f"{running.url}/health", headers=good, timeout=5).status_code == 200
        assert httpx.get(f"{running.url}/metrics", timeout=5).status_code == 401
        assert httpx.get(f"{running.url}/metrics", headers=good, timeout=5).status_code == 200
        workers = group_members(running.process.pid)
        assert len(workers) >= 5, workers  # uv, serve, LitServe's API server and inference workers
    finally:
        running.stop_cleanly(signal.SIGINT, to_group=True)  # Ctrl-C in a terminal reaches the whole group


@pytest.mark.slow
def test_a_precision_the_device_cannot_run_is_one_line_and_exit_2(trained_model: Path) -> None:
    done = run("serve", "--serving.model_dir", str(trained_model), "--serving.precision", "fp16")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: serving.precision: fp16 needs a GPU; on a CPU use int8, fp32 or auto"
    ]


@pytest.mark.slow
def test_a_port_in_use_is_one_line_and_exit_2(trained_model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("serve", "--serving.model_dir", str(trained_model), "--serving.port", str(port))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: serving.port: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.slow
def test_an_unusable_metrics_folder_is_one_line_and_exit_2(trained_model: Path, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("mine\n")
    done = run(
        "serve", "--serving.model_dir", str(trained_model), "--serving.port", str(free_port()),
        env={"PROMETHEUS_MULTIPROC_DIR": str(not_a_folder)},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: PROMETHEUS_MULTIPROC_DIR: cannot use {not_a_folder}: File exists"
    ]
    assert not_a_folder.read_text() == "mine\n"


@pytest.mark.slow
def test_missing_model_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run("serve", "--serving.model_dir", str(tmp_path / "none"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: serving.model_dir: {tmp_path / 'none'} is not a folder; train a model with `uv run train-local` or "
        "point to one"
    ]


def test_a_model_with_nan_weights_is_refused_at_load(tmp_path: Path) -> None:
    diverged = build_diverging_classifier(tmp_path / "diverged")
    with pytest.raises(ModelDirError, match=r"model\.safetensors holds NaN or infinite weights \(classifier\.weight\)"):
        check_finite_weights(diverged)
    check_finite_weights(build_tiny_classifier(tmp_path / "fine"))  # a sound model passes
    done = run("serve", "--serving.model_dir", str(diverged))  # and serve checks before it starts anything
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: serving.model_dir: {diverged / 'model.safetensors'} holds NaN or infinite weights "
        "(classifier.weight): retrain the model"
    ]


@pytest.mark.slow
def test_info_answers_for_a_metrics_file_with_nan(trained_model: Path, tmp_path: Path) -> None:
    """metrics.json from an older run may hold NaN (not JSON): /info still answers, with null there."""
    model = tmp_path / "model"
    shutil.copytree(trained_model, model, ignore=shutil.ignore_patterns("checkpoints"))
    (model / "metrics.json").write_text('{"accuracy": 0.5, "loss": NaN}')
    running = start_server(model, tmp_path / "serve.log", program=uv_run("serve"))
    try:
        info = httpx.get(f"{running.url}/info", timeout=5)
        assert info.status_code == 200, info.text
        assert info.json()["model"]["eval_metrics"] == {"accuracy": 0.5, "loss": None}
        assert predict(running, {"text": "superb"}).status_code == 200
    finally:
        running.stop_cleanly(signal.SIGINT)  # Ctrl-C to `uv run serve` alone


# The server, with LitServe's worker monitor (awake every 2 s) awake all the time.
WATCHED_CLOSELY = """
import {{ cookiecutter.package_name }}.serve as serve

build_server = serve.build_server


def watched_closely(settings):
    server = build_server(settings)
    server.monitor_internal = 0.001
    return server


if __name__ == "__main__":
    serve.build_server = watched_closely
    serve.main()
"""


@pytest.mark.slow
def test_a_stop_is_clean_whenever_the_worker_monitor_wakes(trained_model: Path, tmp_path: Path) -> None:
    """Awake all the time, LitServe's worker monitor sees every step of a stop: the workers it finds stopped must not
    be reported as crashed, nor its call to the manager process that has gone end in a traceback."""
    script = tmp_path / "watched_closely.py"
    script.write_text(WATCHED_CLOSELY)
    for signum in (signal.SIGTERM, signal.SIGINT):
        log = tmp_path / f"serve-{signum.name}.log"
        running = start_server(trained_model, log, program=[sys.executable, str(script)])
        assert predict(running, {"text": "superb"}).status_code == 200
        running.stop_cleanly(signum)


@pytest.mark.slow
def test_kill_9_of_uv_run_serve_leaves_nothing(trained_model: Path, tmp_path: Path) -> None:
    """uv cannot pass SIGKILL on: the kernel tells the server (lifetime.end_with_parent), which stops its workers.
    The other ways to stop it are checked where those servers end: SIGTERM to uv (the `server` fixture), Ctrl-C to uv
    alone (test_info_answers_for_a_metrics_file_with_nan) and to the group (test_api_key_protects_every_endpoint...)."""
    running = start_server(trained_model, tmp_path / "serve.log", program=uv_run("serve"))
    assert len(group_members(running.process.pid)) >= 5, group_members(running.process.pid)
    running.stop_cleanly(signal.SIGKILL)


@pytest.mark.slow
def test_kill_9_of_the_server_itself_leaves_nothing_holding_the_port(trained_model: Path, tmp_path: Path) -> None:
    """The OOM killer's way: LitServe's HTTP processes and its manager are forked, not spawned, and end with the server
    (lifetime.forks_follow_this_process); the port is free for the next start."""
    running = start_server(trained_model, tmp_path / "serve.log")
    left = running.stop(signal.SIGKILL)
    assert not left, f"still running {STOP_TIMEOUT_S} s after SIGKILL: {left}"
    assert port_is_free(running.port)


# The server, with every forward pass held up long enough for a stop to arrive while requests are in flight.
SLOW_TO_ANSWER = """
import os
import time
from pathlib import Path

import {{ cookiecutter.package_name }}.serve as serve

predict = serve.TextClassifierAPI.predict


def slow_predict(self, batch):
    Path(os.environ["PREDICT_STARTED"]).touch()
    time.sleep(2)
    return predict(self, batch)


serve.TextClassifierAPI.predict = slow_predict  # at the top: the spawned inference workers run this module too

if __name__ == "__main__":
    serve.main()
"""


def stops_at_the_second_sigterm(ready: Any) -> None:
    """A child whose first SIGTERM is lost, as one is when it arrives while a stray SIGTERM is still pending."""
    received = []

    def on_sigterm(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 2:
            os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    ready.set()
    while True:
        time.sleep(0.01)


def test_stopping_children_asks_again_when_a_sigterm_is_lost() -> None:
    context = multiprocessing.get_context("spawn")  # not fork: pytest runs threads by now
    ready = context.Event()
    child = context.Process(target=stops_at_the_second_sigterm, args=(ready,))
    child.start()
    assert ready.wait(30)
    stop_processes([child], grace_s=SHUTDOWN_GRACE_S)
    assert child.exitcode == 0, "killed at the end of the grace period: the second SIGTERM never came"


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c-twice", "sigterm-to-every-process"])
def test_a_stop_sent_to_every_process_still_answers_the_requests_in_flight(
    stop: str, trained_model: Path, tmp_path: Path
) -> None:
    """People press Ctrl-C again when a stop takes a second; systemd (KillMode=control-group, its default), supervisord
    (stopasgroup) and `kill -- -<group>` send SIGTERM to every process at once. The HTTP processes, the inference
    workers and LitServe's manager leave both to the server, which stops them in order: a second SIGINT of their own
    would make uvicorn drop the requests it is waiting to answer, and a worker or manager that ends at once leaves them
    unanswered (500 after the grace period, and a traceback)."""
    script, started = tmp_path / "slow_to_answer.py", tmp_path / "predict-started"
    script.write_text(SLOW_TO_ANSWER)
    env = {"PREDICT_STARTED": str(started)}
    running = start_server(trained_model, tmp_path / "serve.log", env=env, program=[sys.executable, str(script)])
    signum = signal.SIGINT if stop == "ctrl-c-twice" else signal.SIGTERM
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(predict, running, {"text": f"review {i}"}) for i in range(2)]
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "no forward pass began"
        if stop == "ctrl-c-twice":
            os.killpg(running.process.pid, signal.SIGINT)
            time.sleep(0.5)
        running.stop_cleanly(signum, to_group=True)
        assert [answer.result().status_code for answer in answers] == [200, 200]
