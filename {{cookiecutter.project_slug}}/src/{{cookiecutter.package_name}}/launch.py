"""`uv run train-local` and `uv run serve`: tie the process to uv, check the settings, then hand over.

These run before torch is imported (seconds): the kernel is asked first to end this process with uv
(lifetime.end_with_parent, kept across exec), and `--help` and a bad setting answer at once (one line, exit code 2).
Training with one process to run (a CPU, or one GPU, and no accelerate config file) execs the training module
itself: no process in between to lose a signal or an exit code. Otherwise it execs `accelerate launch` with one
process per GPU, or with your `accelerate config`. Serving goes on in this process. Ctrl-C or SIGTERM while either
starts is one line and exit code 130 (train.py guards the training module's own imports).
"""

import os
import re
import shutil
import sys
from pathlib import Path

from {{ cookiecutter.package_name }}.lifetime import end_with_parent, exit_on_interrupt, hold_stops, interrupt_on_sigterm

TRAIN_MODULE = "{{ cookiecutter.package_name }}.train"
TRAIN_SECTIONS = ("model", "data", "training")  # the settings each command reads
TRAIN_ABOUT = "Fine-tune model.checkpoint on data.dataset; the model lands in training.output_dir."
SERVE_SECTIONS = ("serving", "model")
SERVE_ABOUT = "Serve the model in serving.model_dir as a REST API (POST /predict, GET /health, /info, /docs)."
TRAIN_STARTING = "before training started; nothing was written"  # a stop while the settings or torch load
SERVE_STARTING = "before the server started"  # a stop while the imports, the settings or the model load


def accelerate_config() -> Path | None:
    """`accelerate config`'s file, where accelerate looks for it by default (without importing accelerate)."""
    hf_home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    config = Path(hf_home).expanduser() / "accelerate" / "default_config.yaml"
    return config if config.is_file() else None


def gpu_count() -> int:
    """NVIDIA GPUs this process may use, from CUDA_VISIBLE_DEVICES or the driver's device nodes (no torch import)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = []
        for device in visible.split(","):
            if not device.strip() or device.strip().startswith("-"):
                break  # CUDA stops at the first invalid entry
            devices.append(device)
        return len(devices)
    return sum(1 for node in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", node.name))


def accelerate_command(flags: list[str], gpus: int, config: Path | None) -> list[str]:
    command = ["accelerate", "launch", "--quiet"]
    if config is None:
        command += ["--num_processes", str(max(gpus, 1)), "--num_machines", "1", "--dynamo_backend", "no"]
        command += ["--mixed_precision", "no"]  # the Trainer applies training.mixed_precision itself
        command += ["--multi_gpu"] if gpus > 1 else []
    return [*command, "-m", TRAIN_MODULE, *flags]


def train_local() -> None:
    end_with_parent()
    interrupt_on_sigterm()
    flags = sys.argv[1:]
    with exit_on_interrupt(TRAIN_STARTING):
        # Imported here, not above: a stop while the settings (pydantic) load is one line too.
        from {{ cookiecutter.package_name }}.settings import settings_or_exit  # noqa: PLC0415

        settings_or_exit(flags, about=TRAIN_ABOUT, sections=TRAIN_SECTIONS)
    config, gpus = accelerate_config(), gpu_count()
    if config is None and gpus <= 1:
        hold_stops()  # train.py releases them once it can answer them in one line
        os.execv(sys.executable, [sys.executable, "-m", TRAIN_MODULE, *flags])
    command = accelerate_command(flags, gpus, config)
    executable = shutil.which(command[0])
    if executable is None:
        sys.exit("error: `accelerate` is not on PATH; run `uv sync` first")
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    os.execv(executable, command)


def serve() -> None:
    end_with_parent()
    interrupt_on_sigterm()
    with exit_on_interrupt(SERVE_STARTING):
        from {{ cookiecutter.package_name }}.settings import settings_or_exit  # noqa: PLC0415 - as in train_local

        settings_or_exit(sys.argv[1:], about=SERVE_ABOUT, sections=SERVE_SECTIONS)
        from {{ cookiecutter.package_name }} import serve as server  # noqa: PLC0415 - imports torch: after the checks
    server.main()


if __name__ == "__main__":
    train_local()
