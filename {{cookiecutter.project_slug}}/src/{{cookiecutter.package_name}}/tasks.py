"""`uv run <task>`: uv runs programs, not task definitions, so each task has a console script that runs here.

The tasks themselves live in pyproject.toml under [tool.taskipy.tasks]; this only hands over to taskipy, which
forwards SIGTERM to the task's process and returns its exit code.
"""

import sys
from pathlib import Path


def run_task() -> None:
    try:
        from taskipy.cli import run  # noqa: PLC0415 - taskipy is a dev tool, absent from the images
    except ImportError:
        sys.exit("error: taskipy is not installed here; run `uv sync` (it is in the dev dependency group)")
    sys.exit(run([Path(sys.argv[0]).name, *sys.argv[1:]]))
