"""The template's Docker chain, for real, on a freshly baked Python 3.11 project:

devcontainer up (.devcontainer/cpu) → `uv run train-local` inside it on a tiny local model → `uv run build-image`
(runtime and cloud) → the runtime image serves the model trained in the devcontainer → the generated project's own
docker tests pass (none skipped) → the CUDA devcontainer's configuration is read and its image built.

Needs a Docker engine whose client speaks BuildKit (`DOCKER`, else `docker` on PATH), npm (for @devcontainers/cli) and
local images for the Dockerfile's FROM lines. Without an engine this skips, or fails when REQUIRE_DOCKER=1 (CI sets
it: a container test that skips proves nothing). EXTRA_CA=<pem> reaches every build as the CA secret. Everything it
creates (containers, images, the devcontainer's volume) is removed at the end; `docker builder prune` is CI's job.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import BakedProject

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEVCONTAINER_CLI = "@devcontainers/cli@0.89"
DEV_UID = 1000  # the Dockerfile's `dev` user, as on a typical Linux workstation
TINY = (
    "from pathlib import Path; from tests.tiny import build_tiny_classifier, write_review_folder; "
    "build_tiny_classifier(Path('data/tiny-model')); write_review_folder(Path('data/reviews'))"
)


def docker_client() -> str | None:
    return os.environ.get("DOCKER") or shutil.which("docker")


@pytest.fixture(scope="module")
def docker() -> str:
    client = docker_client()
    answered = client is not None and subprocess.run([client, "version"], capture_output=True).returncode == 0
    if not answered:
        reason = "no Docker engine answers (set DOCKER to a client that reaches one)"
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    assert client is not None
    return client


def docker_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def ok(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(command, cwd=cwd, env=env or docker_env(), capture_output=True, text=True, timeout=timeout)
    said = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{said}"
    return done.stdout


@pytest.fixture(scope="module")
def devcontainer_cli(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The devcontainer CLI from npm, into a temporary prefix (DEVCONTAINER=/path/to/devcontainer reuses one)."""
    if os.environ.get("DEVCONTAINER"):
        return os.environ["DEVCONTAINER"]
    npm = shutil.which("npm")
    assert npm, f"npm is needed to install {DEVCONTAINER_CLI}"
    prefix = tmp_path_factory.mktemp("devcontainer-cli")
    ok([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix), DEVCONTAINER_CLI], timeout=600)
    return str(prefix / "node_modules" / ".bin" / "devcontainer")


@dataclass
class Chain:
    """The baked project, the tools, and a ledger of what the chain creates (removed at the end)."""

    project: BakedProject
    docker: str
    cli: str
    label: str
    images: list[str] = field(default_factory=list)

    def command(self, variant: str, command: str) -> list[str]:
        config = self.project.path / ".devcontainer" / variant / "devcontainer.json"
        where = ["--workspace-folder", str(self.project.path), "--config", str(config)]
        if command in {"up", "exec", "build"}:
            where += ["--docker-path", self.docker]
        if command in {"up", "exec"}:
            where += ["--id-label", self.label]
        return [self.cli, command, *where]

    def devcontainer(self, variant: str, command: str, *args: str) -> str:
        return ok([*self.command(variant, command), *args])

    @property
    def served_label(self) -> str:
        """For the containers the chain serves from: `devcontainer exec` finds its container by `label`, so they
        must not carry that one."""
        return f"{self.label}-served"


@pytest.fixture(scope="module")
def chain(docker: str, session_bake, devcontainer_cli: str) -> Iterator[Chain]:
    project: BakedProject = session_bake("python-3.11-local-paths")
    project.run_ok("uv", "sync", "--locked", "--quiet")
    made = Chain(project, docker, devcontainer_cli, f"modern-ml-cookiecutter.chain={uuid.uuid4().hex[:12]}")
    try:
        yield made
    finally:
        for label in (made.label, made.served_label):
            found = subprocess.run([docker, "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True)
            for container in found.stdout.split():
                subprocess.run([docker, "rm", "--force", "--volumes", container], capture_output=True)
        if made.images:
            subprocess.run([docker, "image", "rm", "--force", *made.images], capture_output=True)
        subprocess.run([docker, "volume", "rm", "--force", f"{project.path.name}-hf-cache"], capture_output=True)


def last_json(output: str) -> dict[str, object]:
    line = [line for line in output.splitlines() if line.startswith("{")][-1]
    found: dict[str, object] = json.loads(line)
    return found


def test_chain_devcontainer_train_build_serve_and_generated_docker_tests(chain: Chain, docker: str) -> None:
    project, images = chain.project, chain.images
    name = f"chain-{uuid.uuid4().hex[:8]}"

    # 1. The CPU devcontainer, built by `devcontainer up` alone: behind this machine's TLS-intercepting proxy the
    #    dev stage's package downloads need EXTRA_CA, which initializeCommand hands to the build as its secret. The
    #    workspace is owned by the dev user (uid 1000), as on a typical workstation.
    ok(["chown", "-R", f"{DEV_UID}:{DEV_UID}", str(project.path)], env=dict(os.environ))
    up = last_json(chain.devcontainer("cpu", "up", "--remove-existing-container"))
    assert up.get("outcome") == "success", up
    # The devcontainer's image, and the one it was derived from to match the user's uid.
    devcontainer_image = ok([docker, "inspect", "--format", "{{.Config.Image}}", str(up["containerId"])]).strip()
    images += [devcontainer_image, devcontainer_image.removesuffix(":latest").removesuffix("-uid")]
    whoami = chain.devcontainer("cpu", "exec", "id", "-un")
    assert whoami.strip().splitlines()[-1] == "dev"

    # 2. Docker from inside: the host's engine through its socket, as the dev user.
    engine = chain.devcontainer("cpu", "exec", "docker", "info", "--format", "{{.ServerVersion}}")
    assert engine.strip().splitlines()[-1], engine

    # 3. Training inside the devcontainer, offline, on a tiny model and data made there.
    offline = ["--remote-env", "HF_HUB_OFFLINE=1", "--remote-env", "HF_DATASETS_OFFLINE=1"]
    chain.devcontainer("cpu", "exec", *offline, "uv", "run", "python", "-c", TINY)
    train = ["uv", "run", "train-local", "--model.checkpoint", "./data/tiny-model", "--data.dataset", "./data/reviews"]
    train += ["--training.output_dir", "./models/chain", "--training.num_train_epochs", "1"]
    chain.devcontainer("cpu", "exec", *offline, *train)
    trained = project.path / "models" / "chain"
    assert (trained / "config.json").is_file()
    assert "accuracy" in json.loads((trained / "metrics.json").read_text())

    # 4. build-image inside the devcontainer (runtime and cloud), through the host's engine and the proxy's CA.
    flags = ["--image.registry", "", "--image.name", name, "--image.tag", "test"]
    images += [f"{name}:test", f"{name}:test-cloud"]
    chain.devcontainer("cpu", "exec", "uv", "run", "build-image", *flags)

    # 5. The runtime image serves what the devcontainer trained, mounted read-only as it is: what the server reads
    #    is readable by the image's user (the Trainer's owner-only checkpoints are not among it).
    publish = ["-p", "127.0.0.1::8000", "-v", f"{trained}:/model:ro"]
    container = ok([docker, "run", "-d", "--label", chain.served_label, *publish, f"{name}:test"]).strip()
    port = ok([docker, "port", container, "8000/tcp"]).split(":")[-1].strip()
    wait_for_health(f"http://127.0.0.1:{port}/health", docker, container)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict",
        data=json.dumps({"text": "the cast was superb and the ending felt moving"}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = json.loads(answer.read())
    labels = set(json.loads((trained / "config.json").read_text()).get("id2label", {}).values()) or {"0", "1"}
    assert body["label"] in labels | {"LABEL_0", "LABEL_1"}
    # The README's curl line works from inside the devcontainer too (its network is the host's; curl is in `dev`).
    curl = ["curl", "-fsS", "-H", "content-type: application/json", "-d", '{"text": "superb"}']
    inside = json.loads(chain.devcontainer("cpu", "exec", *curl, f"http://127.0.0.1:{port}/predict").splitlines()[-1])
    assert inside["label"] in labels | {"LABEL_0", "LABEL_1"}
    ok([docker, "rm", "--force", container])

    # 6. The generated project's own container tests, from inside the devcontainer (bind mounts translated to the
    #    host's paths, ports on the shared host network): all pass, none skipped.
    report = "docker-tests.xml"
    inside = ["--remote-env", "TESTCONTAINERS_RYUK_DISABLED=true", "--remote-env", "TC_HOST=127.0.0.1"]
    done = subprocess.run(
        [*chain.command("cpu", "exec"), *inside, "uv", "run", "pytest", "-m", "docker", "-p", "no:cacheprovider",
         f"--junitxml={report}"],
        env=docker_env(), capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert done.returncode == 0, f"generated docker tests failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    suite = ET.parse(project.path / report).getroot().iter("testsuite").__next__()
    assert int(suite.get("tests", "0")) >= 10, suite.attrib
    assert suite.get("skipped") == "0", f"a container test skipped: {suite.attrib}"


def wait_for_health(url: str, docker: str, container: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    logs = subprocess.run([docker, "logs", container], capture_output=True, text=True)
    pytest.fail(f"{url} never answered:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")


def test_cuda_devcontainer_configuration_reads_and_its_image_builds(chain: Chain, docker: str) -> None:
    configuration = last_json(chain.devcontainer("cuda", "read-configuration"))["configuration"]
    assert isinstance(configuration, dict)
    assert configuration["build"]["target"] == "dev"
    assert configuration["runArgs"] == ["--gpus", "all", "--network=host"]
    assert configuration["hostRequirements"]["gpu"] is True
    image = f"chain-cuda-{uuid.uuid4().hex[:8]}:dev"
    chain.images.append(image)
    chain.devcontainer("cuda", "build", "--image-name", image)
    inspected = json.loads(ok([docker, "image", "inspect", image]))[0]
    assert inspected["Config"]["User"] == "1000:1000"
