"""Shared fixtures: tiny offline models and data, and a way to run the project's own commands."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.settings import DEFAULT_CONFIG, ENV_PREFIX, Settings, load_settings

from tests.tiny import build_tiny_classifier, write_review_folder

STOP_TIMEOUT_S = 10  # what a person waits after Ctrl-C before reaching for kill -9

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the project environment's scripts: train-local, serve, ...


def pytest_configure(config: pytest.Config) -> None:
    """Inside the devcontainer the Docker engine is the host's, which mounts only host folders: temporary files go
    under the workspace (.pytest-tmp/), which image.host_path translates."""
    if os.environ.get("HOST_WORKSPACE_FOLDER") and not config.option.basetemp:
        config.option.basetemp = str(PROJECT / ".pytest-tmp")


def settings_file_values() -> Settings:
    """The generated settings file alone, whatever this shell exports: what the images and cloud jobs start from."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
            patch.delenv(name)  # the settings loader reads the process environment
        return load_settings(["--config", str(PROJECT / DEFAULT_CONFIG)], environ={})


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
    """A model folder from `train-local` that tells positive from negative reviews (shared: training takes a while),
    with TensorBoard curves."""
    output = tmp_path_factory.mktemp("trained")
    done = run("train-local", *train_flags(tiny_checkpoint, review_data, output, "--training.report_to", "tensorboard"))
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on the port, bound as servers bind (SO_REUSEADDR, as uvicorn and serve's own
    check do): nothing listens there, though connections a stop closed may linger on it for a minute (TIME_WAIT)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def group_members(pgid: int) -> list[str]:
    """Live processes of a process group, read from /proc (zombies hold nothing and are left out)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            command, fields = rest.rsplit(") ", 1)
        except (OSError, ValueError):
            continue  # the process ended while we read
        state, _parent, group = fields.split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(f"{pid} {command}")
    return members


def uv_run(*command: str) -> list[str]:
    """`uv run <command>`, as a person types it; without uv here, the project's console script itself."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        return [str(BIN / command[0]), *command[1:]]
    return [uv, "run", "--no-sync", *command]


def start_in_own_group(command: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `command` as the leader of a new session and process group, its output in `log`."""
    with log.open("wb") as output:
        return subprocess.Popen(
            command, cwd=PROJECT, env=offline_env(env), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def send_and_wait(process: subprocess.Popen[bytes], signum: int, *, to_group: bool) -> list[str]:
    """Send `signum` to the leader (or its whole group) and wait up to STOP_TIMEOUT_S; the processes still alive."""
    if to_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (left := group_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
        process.poll()  # reap the leader
    if left:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return left


def ctrl_c_while_starting(command: list[str], when: float | str, log: Path) -> tuple[int, list[str]]:
    """Start `command`, press Ctrl-C as a terminal does (SIGINT to the whole group) after `when` seconds or once its
    output shows `when`, and check that everything ended without a traceback; the exit code and the `error:` lines."""
    leader = start_in_own_group(command, log)
    if isinstance(when, str):
        deadline = time.monotonic() + 120
        while when not in log.read_text(errors="replace") and leader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert when in log.read_text(errors="replace"), f"never printed {when!r}"
    else:
        time.sleep(when)
    left = send_and_wait(leader, signal.SIGINT, to_group=True)
    said = log.read_text(errors="replace")
    assert not left, f"still running {left} after Ctrl-C: {said[-2000:]}"
    assert "Traceback" not in said, said[-3000:]
    return leader.returncode, [line for line in said.splitlines() if line.startswith("error: ")]
