"""Finish a generated project: drop what the answers switched off, then lock the environment with uv."""

import shutil
import subprocess
import sys

INCLUDE_GITHUB_ACTIONS = {{ cookiecutter.include_github_actions | tojson }} == "y"
LOCK_TIMEOUT_S = 300


def prune() -> None:
    if not INCLUDE_GITHUB_ACTIONS:
        shutil.rmtree(".github")


def lock() -> None:
    """Write uv.lock so the first commit pins every package; without uv or the index, say how to do it later."""
    uv = shutil.which("uv")
    how = "run `uv lock` in the project once uv is installed and the package index is reachable"
    if uv is None:
        print(f"note: uv is not on PATH, so no uv.lock was written; {how}", file=sys.stderr)
        return
    try:
        done = subprocess.run([uv, "lock", "--quiet"], capture_output=True, text=True, timeout=LOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"note: `uv lock` took over {LOCK_TIMEOUT_S} s and was stopped; {how}", file=sys.stderr)
        return
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"note: `uv lock` failed ({reason}); {how}", file=sys.stderr)


if __name__ == "__main__":
    prune()
    lock()
