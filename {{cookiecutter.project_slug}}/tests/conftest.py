"""Shared fixtures: tiny offline models and data, and a way to run the project's own commands."""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.tiny import build_tiny_classifier, write_review_folder

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the project environment's scripts: train-local, serve, ...
ENV_PREFIX = "{{ cookiecutter.package_name.upper() }}_"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def review_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_review_folder(tmp_path_factory.mktemp("reviews"))


def train_flags(checkpoint: Path, data: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--model.checkpoint", str(checkpoint),
        "--model.max_length", "32",
        "--data.dataset", str(data),
        "--training.output_dir", str(output),
        "--training.learning_rate", "0.005",
        "--training.num_train_epochs", "2",
        "--training.logging_steps", "5",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def trained_model(tiny_checkpoint: Path, review_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder from `train-local` that tells positive from negative reviews (shared: training takes a while)."""
    output = tmp_path_factory.mktemp("trained")
    done = run("train-local", *train_flags(tiny_checkpoint, review_data, output))
    assert done.returncode == 0, done.stderr[-3000:]
    return output


def offline_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with the Hub switched off and no project settings leaking in from the caller."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra or {})
    return env


def run(*command: str, env: Mapping[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run one of the project's commands (a script in the environment, e.g. "train-local") from the project root."""
    program = str(BIN / command[0]) if (BIN / command[0]).exists() else command[0]
    return subprocess.run(
        [program, *command[1:]],
        cwd=PROJECT,
        env=offline_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
