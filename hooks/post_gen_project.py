"""Finish a generated project: drop what the answers switched off, lock the environment with uv, and make the
project a git repository whose first commit holds it all, uv.lock included.

The answers were checked before anything was written (local_extensions.py); this hook only prints notes.
"""

import shutil
import subprocess
import sys

INCLUDE_GITHUB_ACTIONS = {{ cookiecutter.include_github_actions | tojson }} == "y"
PYTHON_VERSION = {{ cookiecutter.python_version | tojson }}
AUTHOR_NAME = {{ cookiecutter.author_name | tojson }}
AUTHOR_EMAIL = {{ cookiecutter.author_email | tojson }}
LOCK_TIMEOUT_S = 300
GIT_TIMEOUT_S = 60


def prune() -> None:
    if not INCLUDE_GITHUB_ACTIONS:
        shutil.rmtree(".github")


def uv_reason(stderr: str) -> str:
    """uv's own reason in one line: its last `error:` line and the innermost `cause:` under it."""
    lines = [line.strip() for line in stderr.splitlines()]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    causes = [line.removeprefix("cause:").strip() for line in lines if line.startswith("cause:")]
    if not errors:
        return next((line for line in reversed(lines) if line), "no output")
    return f"{errors[-1]}: {causes[-1]}" if causes else errors[-1]


def lock() -> None:
    """Write uv.lock so the first commit pins every package; when uv cannot, say why and how to do it later."""
    uv = shutil.which("uv")
    later = "run `uv lock` in the project once that is fixed"
    if uv is None:
        print("note: no uv.lock written: uv is not on PATH; install uv, then run `uv lock` in the project", file=sys.stderr)
        return
    try:
        done = subprocess.run([uv, "lock", "--quiet"], capture_output=True, text=True, timeout=LOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"note: no uv.lock written: `uv lock` took over {LOCK_TIMEOUT_S} s and was stopped; {later}", file=sys.stderr)
        return
    if done.returncode == 0:
        return
    reason = uv_reason(done.stderr)
    found = subprocess.run([uv, "python", "find", PYTHON_VERSION], capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        reason = f"uv finds no Python {PYTHON_VERSION} here and could not get one ({reason})"
    print(f"note: no uv.lock written: {reason}; {later}", file=sys.stderr)


def first_commit() -> None:
    """`git init` and a first commit by the author the answers name; a note instead when that cannot be done."""
    git = shutil.which("git")
    if git is None:
        print("note: git is not on PATH: the project is not a git repository yet (git init, then commit)", file=sys.stderr)
        return
    inside = subprocess.run([git, "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    if inside.returncode == 0:  # generated inside another repository: leave it to that one
        print(f"note: no git repository made: the project is inside {inside.stdout.strip()}", file=sys.stderr)
        return
    identity = ["-c", f"user.name={AUTHOR_NAME}", "-c", f"user.email={AUTHOR_EMAIL}", "-c", "commit.gpgsign=false"]
    steps = {
        "init": ["-c", "init.defaultBranch=main", "init", "-q"],
        "add": ["add", "--all"],
        "commit": [*identity, "commit", "-q", "--no-verify", "-m", "Generated from modern-ml-cookiecutter"],
    }
    for name, arguments in steps.items():
        done = subprocess.run([git, *arguments], capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"note: no first commit: `git {name}` failed: {reason}", file=sys.stderr)
            return


if __name__ == "__main__":
    prune()
    lock()
    first_commit()
