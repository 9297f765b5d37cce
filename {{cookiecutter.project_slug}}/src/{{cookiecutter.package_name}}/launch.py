"""`uv run train-local`: check the settings, then hand over to `accelerate launch` of the training module.

Settings are validated here first (exit code 2, one line) because accelerate does not pass a child's exit code
through. Without an accelerate config file (`accelerate config`), one process per GPU (or one on a CPU) is used.
"""

import os
import shutil
import sys
from pathlib import Path

import torch
from accelerate.commands.config import default_config_file

from {{ cookiecutter.package_name }}.settings import settings_or_exit


def accelerate_command(flags: list[str]) -> list[str]:
    command = ["accelerate", "launch", "--quiet"]
    if not (os.environ.get("ACCELERATE_CONFIG_FILE") or Path(default_config_file).exists()):
        gpus = torch.cuda.device_count()
        command += ["--num_processes", str(max(gpus, 1)), "--num_machines", "1", "--dynamo_backend", "no"]
        command += ["--mixed_precision", "no"]  # the Trainer applies training.mixed_precision itself
        command += ["--multi_gpu"] if gpus > 1 else []
    return [*command, "-m", "{{ cookiecutter.package_name }}.train", *flags]


def main() -> None:
    flags = sys.argv[1:]
    settings_or_exit(flags)
    command = accelerate_command(flags)
    executable = shutil.which(command[0])
    if executable is None:
        sys.exit("error: `accelerate` is not on PATH; run `uv sync` first")
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    os.execv(executable, command)  # accelerate takes this process's place, so signals reach it directly


if __name__ == "__main__":
    main()
