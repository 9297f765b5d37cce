"""`uv run <task>`: uv runs programs, not task definitions, so each dev task has a command that hands over to taskipy.

The tasks themselves live in the project's pyproject.toml under [tool.taskipy.tasks]; taskipy forwards SIGTERM to the
task's process and returns its exit code.
"""

import sys
from pathlib import Path

from taskipy.cli import run


def run_task() -> None:
    sys.exit(run([Path(sys.argv[0]).name, *sys.argv[1:]]))
