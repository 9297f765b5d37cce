"""A generated project's own tasks pass: `uv sync`, then `uv run lint`, its pre-commit hooks (ruff, mypy, hygiene),
a wheel without the dev tasks, and `uv run test`."""

import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from local_extensions import PACKAGE, TAKEN_NAMES

pytestmark = pytest.mark.slow

# The default bake runs its whole suite, container tests included. The other two run everything but their container
# tests: tests/test_docker_chain.py runs the Python 3.11 bake's inside the real devcontainer; the Python 3.13 bake's
# need a 3.13 base image, which CI has no stand-in for (`docker/standins.sh 3.13` makes one).
CHECKED = {
    "defaults": [],
    "python-3.11-local-paths": ["-m", "not docker"],
    "python-3.13-other-answers": ["-m", "not docker"],
}


@pytest.mark.parametrize("name", CHECKED)
def test_generated_project_checks_pass(session_bake, name: str) -> None:
    project = session_bake(name)
    project.run_ok("uv", "sync", "--locked", timeout=1200)
    assert top_level_modules(project) <= TAKEN_NAMES, "local_extensions.TAKEN_NAMES misses installed modules"
    tasks = project.run_ok("uv", "run", "task", "--list")
    for task in ("lint", "format", "typecheck", "test", "check", "train-local", "train-cloud", "serve", "build-image"):
        assert any(line.split()[0] == task for line in tasks.splitlines() if line.strip()), task
    project.run_ok("uv", "run", "lint")
    # The commit hooks as CI runs them (ruff, mypy, hygiene), offline, on the repository the bake made. The devcontainer
    # chain shares this bake and hands it to uid 1000, as on a workstation: git, run here as another user, must be
    # told that the repository is safe.
    safe = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": str(project.path)}
    project.run_ok("uv", "run", "pre-commit", "run", "--all-files", "--show-diff-on-failure", env=safe, timeout=1200)
    assert_clean_wheel(project)
    # Container tests must run, not skip, where CI provides a Docker engine.
    strict = ["-W", "error::pytest.PytestUnknownMarkWarning"]
    report = [f"--junitxml={os.environ['CI_REPORT_DIR']}/{name}.xml"] if "CI_REPORT_DIR" in os.environ else []
    output = project.run_ok(
        "uv", "run", "test", "-p", "no:cacheprovider", *strict, "-rs", *report, *CHECKED[name], timeout=3600
    )
    if os.environ.get("REQUIRE_DOCKER") == "1":
        # Only the GPU test may skip here (no GPU on CI); a skipped container test counts as a failure.
        skipped = [line for line in output.splitlines() if line.startswith("SKIPPED") and "GPU" not in line]
        assert not skipped, output[-3000:]
    assert " passed" in output


def assert_clean_wheel(project) -> None:
    """The wheel a user publishes installs the project's commands, not the dev tasks (lint, test, ...)."""
    out = project.path.parent / "dist-check"
    project.run_ok("uv", "build", "--wheel", "--out-dir", str(out))
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    commands = {line.split("=")[0].strip() for line in text.splitlines() if "=" in line}
    assert commands == {
        "train-local", "train-cloud", "serve-cloud", "serve", "build-image", "serve-image", "show-settings",
    }  # fmt: skip
    shutil.rmtree(out)


def top_level_modules(project) -> set[str]:
    """What `import <name>` finds in the project's environment, for the names a package may take."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(project.run_ok("uv", "run", "--no-sync", "python", "-c", code).strip())
    entries = [entry.name for entry in site.iterdir() if not entry.name.endswith(("-info", ".libs", ".pth"))]
    names = {re.split(r"[.-]", entry)[0].lower() for entry in entries}  # lower: macOS file names ignore case
    mypyc_runtimes = {name for name in names if name.endswith("__mypyc")}  # hashed names nobody types
    return (
        {name for name in names if PACKAGE.match(name)}
        - mypyc_runtimes
        - set(sys.stdlib_module_names)
        - {project.package}
    )
