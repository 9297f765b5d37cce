"""Benchmark: time to first train, and the Trainer's per-step cost against a plain torch loop.

usage: uv run python bench/train.py [--skip-cold]      (from the template root; needs uv, network to the index)

1. Time to first train = bake (with the hook's `uv lock`) + `uv sync` + `uv run train-local` on a tiny local model,
   against its floor = the same `uv sync` + the training module run directly (`python -m <pkg>.train`, no taskipy,
   no accelerate launch): the ratio is what generating and launching add. The bake's two calls to the index, uvx
   resolving cookiecutter and the hook's lock, are timed again online and with --offline (from uv's cache): the
   difference is the time spent waiting on the index, reported as a second ratio.
   With a warm uv cache, and with a cold one (a fresh UV_CACHE_DIR: every wheel downloaded).
2. Per-step time of the project's Trainer setup against a hand-written torch loop (same model, batch, optimizer),
   measured inside the generated project's environment by bench/trainer_vs_loop.py.
Prints figures and ratios; writes bench/results/train.md.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or sys.exit("uv is not on PATH")
    if "/shims/" in found:
        found = subprocess.run(["pyenv", "which", "uv"], capture_output=True, text=True, check=True).stdout.strip()
    return found


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def time_to_first_train(work: Path, cache: Path | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(HF_HUB_OFFLINE="1", UV_NO_PROGRESS="1", UV_PYTHON_DOWNLOADS="never")
    env["PATH"] = f"{Path(uv()).parent}{os.pathsep}{env['PATH']}"
    if cache:
        env["UV_CACHE_DIR"] = str(cache)
    figures: dict[str, float] = {}
    cookiecutter = [uv(), "tool", "run", "--from", "cookiecutter==2.7.1", "cookiecutter"]
    figures["bake"] = timed([*cookiecutter, "--no-input", "-o", str(work), str(ROOT), "python_version=3.11"], ROOT, env)
    # uvx resolves cookiecutter against the index on every start; the same from uv's cache alone (--offline).
    figures["uvx"] = timed([*cookiecutter, "--version"], ROOT, env)
    figures["uvx, offline"] = timed([*cookiecutter[:3], "--offline", *cookiecutter[3:], "--version"], ROOT, env)
    project = work / "sentiment-classifier"
    # The hook's `uv lock` asks the index about every package in the lock; the same resolution from uv's cache alone
    # (--offline) shows how much of the bake is those round trips. The hook's lock file is put back afterwards.
    lock = project / "uv.lock"
    written = lock.read_bytes()
    lock.unlink()
    figures["uv lock"] = timed([uv(), "lock", "--quiet"], project, env)
    lock.unlink()
    figures["uv lock, offline"] = timed([uv(), "lock", "--quiet", "--offline"], project, env)
    lock.write_bytes(written)
    figures["uv sync"] = timed([uv(), "sync", "--locked"], project, env)
    tiny, data = work / "tiny", work / "data"
    maker = "from tests.tiny import build_tiny_classifier as b, write_review_folder as w; import sys; "
    maker += "b(__import__('pathlib').Path(sys.argv[1])); w(__import__('pathlib').Path(sys.argv[2]))"
    timed([uv(), "run", "python", "-c", maker, str(tiny), str(data)], project, env)
    flags = ["--model.checkpoint", str(tiny), "--data.dataset", str(data), "--model.max_length", "32"]
    python = str(project / ".venv" / "bin" / "python")
    launched = [uv(), "run", "train-local", *flags, "--training.output_dir"]
    direct = [python, "-m", "sentiment_classifier.train", *flags, "--training.output_dir"]
    # Interleaved, best of two: a busy machine slows whichever runs at the wrong moment.
    pairs = [
        (
            timed([*launched, str(work / f"launched-{i}")], project, env),
            timed([*direct, str(work / f"direct-{i}")], project, env),
        )
        for i in range(2)
    ]
    figures["train-local"] = min(launched_time for launched_time, _ in pairs)
    figures["train module alone"] = min(direct_time for _, direct_time in pairs)
    figures["total"] = figures["bake"] + figures["uv sync"] + figures["train-local"]
    figures["floor"] = figures["uv sync"] + figures["train module alone"]
    lock_trips = max(0.0, figures["uv lock"] - figures["uv lock, offline"])
    uvx_trips = max(0.0, figures["uvx"] - figures["uvx, offline"])
    figures["index round trips"] = lock_trips + uvx_trips
    return figures


def local_ratio(figures: dict[str, float]) -> float:
    """Time to first train over its floor, less the time the bake (uvx, the hook's `uv lock`) spent on the index."""
    return (figures["total"] - figures["index round trips"]) / figures["floor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold-cache run (downloads ~3 GB)")
    args = parser.parse_args()
    rows = []
    runs = [("warm", None)] if args.skip_cold else [("warm", None), ("cold", True)]
    for name, cold in runs:
        with tempfile.TemporaryDirectory(prefix=f"bench-train-{name}-") as tmp:
            work = Path(tmp)
            figures = time_to_first_train(work, work / "uv-cache" if cold else None)
            rows.append((name, figures))
            print(f"[{name} cache] " + ", ".join(f"{k} {v:.1f}s" for k, v in figures.items()), flush=True)
            print(f"[{name} cache] time to first train / floor = {figures['total'] / figures['floor']:.2f}", flush=True)
            print(f"[{name} cache] the same less the bake's index round trips = {local_ratio(figures):.2f}", flush=True)
            if name == "warm":
                project = work / "sentiment-classifier"
                step = subprocess.run(
                    [str(project / ".venv/bin/python"), str(ROOT / "bench" / "trainer_vs_loop.py")],
                    cwd=project,
                    capture_output=True,
                    text=True,
                    env=dict(os.environ, HF_HUB_OFFLINE="1"),
                )
                if step.returncode != 0:
                    sys.exit(step.stderr[-2000:])
                step_line = step.stdout.strip().splitlines()[-1]
                print(step_line, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Time to first train (seconds)",
        "",
        "| cache | bake | of which index round trips (uvx, lock) | uv sync | train-local | total | floor | ratio "
        "| ratio without the round trips |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in rows:
        lines.append(
            f"| {name} | {f['bake']:.1f} | {f['index round trips']:.1f} | {f['uv sync']:.1f} | {f['train-local']:.1f} "
            f"| {f['total']:.1f} | {f['floor']:.1f} | {f['total'] / f['floor']:.2f} | {local_ratio(f):.2f} |"
        )
    lines += ["", "# Trainer vs plain torch loop", "", step_line, ""]
    (RESULTS / "train.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'train.md'}")


if __name__ == "__main__":
    main()
