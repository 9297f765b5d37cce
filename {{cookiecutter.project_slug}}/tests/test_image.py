"""The images of docker/Dockerfile, built for real with BuildKit through the docker CLI (`uv run build-image`) and run
with testcontainers: the runtime image serves a tiny model (answers, bad input, API key, non-root user, HEALTHCHECK),
`uv run serve-image` serves it too, the dev, runtime and cloud stages hold the same packages (the cloud adds the
trackers), and the CA certificate given to the build as a secret is in no layer. First, the tasks' one-line errors,
which need no engine.

The image tests are marked `docker` and `slow`; they skip, saying so, only where no Docker engine answers. Where the
reaper image cannot be pulled set TESTCONTAINERS_RYUK_DISABLED=true; inside a container, TC_HOST=127.0.0.1.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from testcontainers.core.container import DockerContainer
from transformers import AutoConfig

from {{ cookiecutter.package_name }}.image import MODEL_MOUNT, host_path
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX

from tests.conftest import BIN, PROJECT, offline_env, run

STARTUP_TIMEOUT_S = 300  # torch import and model load on a busy CI runner
HEALTHY_TIMEOUT_S = 90  # the HEALTHCHECK runs every 10 s
BUILD_TIMEOUT_S = 3600  # a cold build downloads and installs torch
TRACKERS = {"mlflow", "tensorboard", "wandb"}  # the `tracking` extra: in dev, in neither image
TRACKING_REQUIREMENTS = "/opt/tracking-requirements.txt"  # the cloud image's pins of it (scripts/sky_run.sh)
# A self-signed certificate made for this test and trusted by nobody: the build secret when EXTRA_CA is not set.
TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBxDCCAWugAwIBAgIURLhiEAGXJmLssJGr11xKRK0fAO0wCgYIKoZIzj0EAwIw
NzE1MDMGA1UEAwwsQnVpbGQgc2VjcmV0IHRlc3QgQ0EgKG5vdCB0cnVzdGVkIGJ5
IGFueW9uZSkwIBcNMjYxMTI4MDgwMzQ1WhgPMjEyNjExMDQwODAzNDVaMDcxNTAz
BgNVBAMMLEJ1aWxkIHNlY3JldCB0ZXN0IENBIChub3QgdHJ1c3RlZCBieSBhbnlv
bmUpMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMjRshHihy1CR8fTybZ8lhyeW
TJSVN9QeztRJvagsmw+kT60KpuDZDJ+EGMKuG3ZUF04dlqIcivACP16aRR/qg6NT
MFEwHQYDVR0OBBYEFOxY1hY+TOfLngOAY+PQE01ht7WHMB8GA1UdIwQYMBaAFOxY
1hY+TOfLngOAY+PQE01ht7WHMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID
RwAwRAIgWayrGukZ2c4PKzuKTyAVQIyoG19+TzRPjRnfoDI5864CICjT2Jlv9C35
EL+DeUegrR0GWIujipV4TpE1Ofq+glmH
-----END CERTIFICATE-----
"""
PACKAGES = (
    "import importlib.metadata as m; "
    "print('\\n'.join(sorted({d.metadata['Name'].lower() + '==' + d.version for d in m.distributions()})))"
)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, f"exit {done.returncode}: {done.stderr}"
    assert len(lines) == 1, f"expected one line, got: {done.stderr}"
    return lines[0]


# --- the tasks' errors: no engine needed ----------------------------------------------------------------------------


def test_serve_image_without_a_model_says_so(tmp_path: Path) -> None:
    line = one_line_error(run("serve-image", "--serving.model_dir", str(tmp_path / "missing")))
    assert line.startswith("error: serving.model_dir")
    assert "train-local" in line


def test_serve_image_with_owner_only_weights_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "model.safetensors").chmod(0o600)
    line = one_line_error(run("serve-image", "--serving.model_dir", str(tmp_path)))
    assert line.endswith(f"chmod -R a+rX {tmp_path}")


def test_serve_image_checks_only_what_the_server_reads(tmp_path: Path) -> None:
    """The Trainer's checkpoints are owner-only and never served: they do not stop serve-image."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    checkpoint = tmp_path / "checkpoints" / "checkpoint-8"
    checkpoint.mkdir(parents=True)
    (checkpoint / "optimizer.pt").write_bytes(b"")
    (checkpoint / "optimizer.pt").chmod(0o600)
    line = one_line_error(run("serve-image", "--serving.model_dir", str(tmp_path), env={"DOCKER": "no-such-docker"}))
    assert line == "error: DOCKER=no-such-docker is not an executable docker client"  # past the permission check


def test_serve_image_in_the_devcontainer_refuses_a_model_outside_the_workspace(tmp_path: Path) -> None:
    """Inside the devcontainer the engine is the host's: it can mount the workspace, not the container's /tmp."""
    (tmp_path / "config.json").write_text("{}")
    env = {"HOST_WORKSPACE_FOLDER": "/home/someone/project", "WORKSPACE_FOLDER": str(PROJECT), "DOCKER": "true"}
    line = one_line_error(run("serve-image", "--serving.model_dir", str(tmp_path), env=env))
    assert line.startswith(f"error: {tmp_path} exists only inside the devcontainer"), line
    assert host_path(PROJECT / "models" / "m", env) == Path("/home/someone/project/models/m")


def test_build_image_with_a_missing_ca_file_says_so(tmp_path: Path) -> None:
    line = one_line_error(run("build-image", env={"EXTRA_CA": str(tmp_path / "ca.pem")}))
    assert line == f"error: EXTRA_CA={tmp_path / 'ca.pem'} is not a file (a PEM certificate the build should trust)"


def test_build_image_without_docker_says_so(tmp_path: Path) -> None:
    missing = one_line_error(run("build-image", env={"DOCKER": str(tmp_path / "docker")}))
    assert missing == f"error: DOCKER={tmp_path / 'docker'} is not an executable docker client"
    # Only the environment's own programs on PATH: no docker anywhere.
    absent = one_line_error(run("build-image", env={"DOCKER": "", "PATH": str(BIN)}))
    assert absent == "error: no docker client on PATH: install Docker, or set DOCKER=/path/to/docker"


def test_build_image_without_a_daemon_says_so(tmp_path: Path) -> None:
    client = os.environ.get("DOCKER") or shutil.which("docker")
    if not client:
        pytest.skip("no docker client on this machine to point at a missing daemon")
    done = run("build-image", env={"DOCKER": client, "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"})
    assert one_line_error(done).startswith("error: the Docker daemon does not answer (")


def test_image_module_without_an_action_shows_usage() -> None:
    done = run("python", "-m", "{{ cookiecutter.package_name }}.image")
    assert done.returncode == 1
    assert done.stderr.startswith("usage:")


# --- the images, built and run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Images:
    name: str  # repository: `uv run build-image --image.registry "" --image.name NAME --image.tag test`
    runtime: str
    cloud: str
    dev: str


@pytest.fixture(scope="session")
def docker() -> str:
    """The docker client, once an engine answers; otherwise the image tests skip with the reason."""
    client = os.environ.get("DOCKER") or shutil.which("docker")
    if client is None:
        pytest.skip("no Docker engine: no docker client (install Docker or set DOCKER)")
    done = subprocess.run([client, "version"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"no Docker engine answers: {(done.stderr.strip().splitlines() or ['docker version failed'])[-1]}")
    return client


@pytest.fixture(scope="session")
def build_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA certificate the builds get as their secret: EXTRA_CA (behind an intercepting proxy) or a test one."""
    extra_ca = os.environ.get("EXTRA_CA")
    if extra_ca:
        return Path(extra_ca)
    path = tmp_path_factory.mktemp("ca") / "test-ca.pem"
    path.write_text(TEST_CA)
    return path


@pytest.fixture(scope="session")
def images(docker: str, build_ca: Path) -> Iterator[Images]:
    """runtime and cloud built by `uv run build-image`, dev by the docker CLI; removed at the end.

    With TEST_IMAGE_NAME=NAME the images NAME:test, NAME:test-cloud and NAME:test-dev were built from this checkout
    already (CI builds them with its layer cache) and are used as they are.
    """
    prebuilt = os.environ.get("TEST_IMAGE_NAME")
    if prebuilt:
        yield Images(prebuilt, f"{prebuilt}:test", f"{prebuilt}:test-cloud", f"{prebuilt}:test-dev")
        return
    name = f"{PROJECT.name}-test-{uuid.uuid4().hex[:8]}"
    secret = ["--secret", f"id=extra_ca,src={build_ca}"]
    built = Images(name, f"{name}:test", f"{name}:test-cloud", f"{name}:test-dev")
    try:
        done = run(
            *("build-image", "--image.registry", "", "--image.name", name, "--image.tag", "test"),
            env={"DOCKER": docker, "EXTRA_CA": str(build_ca)},
            timeout=BUILD_TIMEOUT_S,
        )
        assert done.returncode == 0, f"build-image failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        dev = subprocess.run(
            [docker, "build", "-f", "docker/Dockerfile", "--target", "dev", "--tag", built.dev, *secret, "."],
            cwd=PROJECT,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        assert dev.returncode == 0, f"dev build failed:\n{dev.stderr[-3000:]}"
        yield built
    finally:
        remove = [docker, "image", "rm", "--force", built.runtime, built.cloud, built.dev]
        subprocess.run(remove, capture_output=True, check=False)


@pytest.fixture(scope="session")
def model_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint (a valid model folder), readable by the image's non-root user."""
    folder = tmp_path_factory.mktemp("served") / "model"
    shutil.copytree(tiny_checkpoint, folder)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def inspect(docker: str, *names: str) -> list[dict[str, object]]:
    done = subprocess.run([docker, "inspect", *names], capture_output=True, text=True, check=True)
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


def layers(info: dict[str, object]) -> list[str]:
    """An image's layer digests, base first (from `docker inspect`)."""
    rootfs = info["RootFS"]
    assert isinstance(rootfs, dict)
    return [str(layer) for layer in rootfs["Layers"]]


def health_status(docker: str, container: DockerContainer) -> str:
    state = inspect(docker, container.get_container_id())[0]["State"]
    assert isinstance(state, dict)
    return str(state.get("Health", {}).get("Status", "none"))


def wait_until_healthy(docker: str, container: DockerContainer) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while (status := health_status(docker, container)) != "healthy":
        assert status in {"starting", "healthy"}, f"HEALTHCHECK says {status}"
        assert time.monotonic() < deadline, f"HEALTHCHECK still {status} after {HEALTHY_TIMEOUT_S} s"
        time.sleep(2)


def wait_until_up(url: str, headers: dict[str, str], container: DockerContainer | None = None) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/health", headers=headers, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if container is not None:
            container.reload()
            if container.status == "exited":
                pytest.fail(f"the container exited:\n{container.get_logs()[1].decode()[-3000:]}")
        assert time.monotonic() < deadline, f"no answer on {url}/health within {STARTUP_TIMEOUT_S} s"
        time.sleep(1)


@dataclass
class Served:
    container: DockerContainer
    url: str


def exposed_port(container: DockerContainer, image: str) -> int:
    """The one port the image declares (EXPOSE): where its server listens when nothing overrides it."""
    (port,) = container.get_docker_client().client.images.get(image).attrs["Config"]["ExposedPorts"]
    return int(port.removesuffix("/tcp"))


def serve(image: str, model_dir: Path, env: dict[str, str]) -> Served:
    container = DockerContainer(image)
    port = exposed_port(container, image)
    container.with_exposed_ports(port)
    container.with_volume_mapping(str(host_path(model_dir)), MODEL_MOUNT, "ro")
    for name, value in env.items():
        container.with_env(name, value)
    container.start()
    # The engine's host (TC_HOST when set) and the published port: testcontainers' own choice, when it believes it
    # runs inside a container, is the bridge gateway instead.
    url = f"http://{container.get_docker_client().host()}:{container.get_exposed_port(port)}"
    api_key = env.get("LIT_SERVER_API_KEY")
    try:
        wait_until_up(url, {"X-API-Key": api_key} if api_key else {}, container)
    except BaseException:
        container.stop()
        raise
    return Served(container, url)


@pytest.fixture(scope="module")
def served(images: Images, model_dir: Path) -> Iterator[Served]:
    server = serve(images.runtime, model_dir, {})
    yield server
    server.container.stop()


@pytest.mark.docker
@pytest.mark.slow
def test_runtime_image_serves_the_mounted_model(served: Served, model_dir: Path) -> None:
    labels = set(AutoConfig.from_pretrained(model_dir).id2label.values())
    answer = httpx.post(f"{served.url}/predict", json={"text": "the film was wonderful"}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["label"] in labels
    assert 0.0 <= body["score"] <= 1.0


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"review": "great"}', {"content-type": "application/json"}),
        (b'{"text": ""}', {"content-type": "application/json"}),
        (b"not json at all", {"content-type": "application/json"}),
        (b"text=great", {"content-type": "application/x-www-form-urlencoded"}),
    ],
)
def test_runtime_image_refuses_bad_requests(served: Served, content: bytes, headers: dict[str, str]) -> None:
    answer = httpx.post(f"{served.url}/predict", content=content, headers=headers, timeout=30)
    assert 400 <= answer.status_code < 500, f"{answer.status_code}: {answer.text}"


@pytest.mark.docker
@pytest.mark.slow
def test_runtime_image_runs_as_a_non_root_user(served: Served) -> None:
    code, output = served.container.exec(["id", "-u"])
    assert code == 0
    assert int(output.decode()) != 0


@pytest.mark.docker
@pytest.mark.slow
def test_runtime_image_healthcheck_reports_healthy(docker: str, served: Served) -> None:
    wait_until_healthy(docker, served.container)


@pytest.mark.docker
@pytest.mark.slow
def test_runtime_image_enforces_the_api_key(docker: str, images: Images, model_dir: Path) -> None:
    key = uuid.uuid4().hex
    server = serve(images.runtime, model_dir, {"LIT_SERVER_API_KEY": key})
    try:
        body = {"text": "a dull, tedious film"}
        assert httpx.post(f"{server.url}/predict", json=body, timeout=30).status_code == 401
        wrong = httpx.post(f"{server.url}/predict", json=body, headers={"X-API-Key": "wrong"}, timeout=30)
        assert wrong.status_code == 401
        right = httpx.post(f"{server.url}/predict", json=body, headers={"X-API-Key": key}, timeout=30)
        assert right.status_code == 200, right.text
        wait_until_healthy(docker, server.container)  # the HEALTHCHECK sends the key too
    finally:
        server.container.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def containers_publishing(docker: str, port: int) -> list[str]:
    command = [docker, "ps", "-aq", "--filter", f"publish={port}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.split()


@pytest.mark.docker
@pytest.mark.slow
def test_serve_image_task_serves_on_loopback_and_stops(docker: str, images: Images, model_dir: Path) -> None:
    port = free_port()
    flags = ["--image.registry", "", "--image.name", images.name, "--image.tag", "test"]
    flags += ["--serving.model_dir", str(model_dir), "--serving.port", str(port)]
    process = subprocess.Popen(
        [str(BIN / "serve-image"), *flags], cwd=PROJECT, env=offline_env({"DOCKER": docker}), start_new_session=True
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", {})
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": "a superb cast"}, timeout=30)
        assert answer.status_code == 200, answer.text
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while containers_publishing(docker, port):
            assert time.monotonic() < deadline, "serve-image left its container behind"
            time.sleep(1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for container in containers_publishing(docker, port):
            subprocess.run([docker, "rm", "--force", container], capture_output=True, check=False)


def packages(docker: str, image: str) -> set[str]:
    done = subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "python", image, "-c", PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.docker
@pytest.mark.slow
def test_stages_hold_the_same_locked_packages(docker: str, images: Images) -> None:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    itself = f"{project['name']}=={project['version']}"
    runtime, cloud, dev = (packages(docker, image) for image in (images.runtime, images.cloud, images.dev))
    assert itself in runtime
    assert cloud == runtime, f"cloud and runtime differ on: {sorted(cloud ^ runtime)[:5]}"
    assert not TRACKERS & {package.split("==")[0] for package in runtime}, "the trackers stay out of the images"
    third_party = {package for package in runtime if package != itself}
    assert third_party <= dev, f"dev lacks or differs on: {sorted(third_party - dev)[:5]}"
    assert {"pytest", "ruff", "mypy", *TRACKERS} <= {package.split("==")[0] for package in dev - runtime}


@pytest.mark.docker
@pytest.mark.slow
def test_cloud_stage_is_the_runtime_plus_root_uv_and_the_trackers_pins(docker: str, images: Images) -> None:
    runtime, cloud = inspect(docker, images.runtime, images.cloud)
    runtime_config, cloud_config = runtime["Config"], cloud["Config"]
    assert isinstance(runtime_config, dict)
    assert isinstance(cloud_config, dict)
    assert runtime_config["User"] not in {"", "0", "0:0", "root"}
    assert cloud_config["User"] in {"0", "0:0", "root"}
    runtime_layers, cloud_layers = layers(runtime), layers(cloud)
    assert cloud_layers[: len(runtime_layers)] == runtime_layers, "cloud must reuse the runtime's layers"
    assert len(cloud_layers) == len(runtime_layers) + 1, "cloud adds one layer: uv and the trackers' pins"
    listed = subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "cat", images.cloud, TRACKING_REQUIREMENTS],
        capture_output=True,
        text=True,
        check=True,
    )
    pinned = {line.split(" ")[0] for line in listed.stdout.splitlines() if "==" in line}
    assert {package.split("==")[0] for package in pinned} >= TRACKERS
    locked = tomllib.loads((PROJECT / "uv.lock").read_text())["package"]
    assert pinned <= {f"{package['name']}=={package.get('version')}" for package in locked}, "not what uv.lock pins"


@pytest.mark.docker
@pytest.mark.slow
def test_cloud_image_meets_skypilot_requirements(docker: str, images: Images) -> None:
    """SkyPilot's docker runtime needs a Debian-based image with bash, run as root (or with passwordless sudo)."""
    probe = "cat /etc/debian_version && id -u && command -v apt-get"
    done = subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "bash", images.cloud, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    debian_version, uid, apt = done.stdout.split()
    assert debian_version[0].isdigit(), debian_version
    assert uid == "0"
    assert apt.endswith("apt-get")


@pytest.mark.docker
@pytest.mark.slow
# 200 rows, batch 16, split over the processes; the second run reports to TensorBoard, which the node installs first.
@pytest.mark.parametrize(("processes", "steps", "report_to"), [(1, 13, "none"), (2, 7, "tensorboard")])
def test_sky_run_script_trains_inside_the_cloud_image(
    docker: str,
    images: Images,
    tiny_checkpoint: Path,
    review_data: Path,
    tmp_path: Path,
    processes: int,
    steps: int,
    report_to: str,
) -> None:
    """What SkyPilot does on a node, minus the cloud: its node variables, the task's run script, a mounted bucket."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    environment = {
        "SKYPILOT_NUM_NODES": "1",
        "SKYPILOT_NODE_RANK": "0",
        "SKYPILOT_NODE_IPS": "127.0.0.1",
        "SKYPILOT_NUM_GPUS_PER_NODE": "0",
        "PROCESSES_PER_NODE": str(processes),
        "HF_HUB_OFFLINE": "1",
        f"{ENV_PREFIX}MODEL__CHECKPOINT": "/inputs/model",
        f"{ENV_PREFIX}MODEL__MAX_LENGTH": "32",
        f"{ENV_PREFIX}DATA__DATASET": "/inputs/data",
        f"{ENV_PREFIX}TRAINING__OUTPUT_DIR": "/outputs/models/sentiment",
        f"{ENV_PREFIX}TRAINING__REPORT_TO": report_to,
        # Behind a proxy that intercepts TLS, the node's install must trust its CA as the builds do.
        "EXTRA_CA_PEM": Path(os.environ["EXTRA_CA"]).read_text() if os.environ.get("EXTRA_CA") else "",
    }
    script = (
        'if [ -n "$EXTRA_CA_PEM" ]; then { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null; echo "$EXTRA_CA_PEM"; }'
        " >/tmp/ca.pem; export SSL_CERT_FILE=/tmp/ca.pem; fi; exec bash scripts/sky_run.sh"
    )
    command = [docker, "run", "--rm", "--entrypoint", "bash"]
    command += [
        "-v",
        f"{host_path(tiny_checkpoint)}:/inputs/model:ro",
        "-v",
        f"{host_path(review_data)}:/inputs/data:ro",
    ]
    command += ["-v", f"{host_path(outputs)}:/outputs"]
    for name, value in environment.items():
        command += ["-e", f"{name}={value}"]
    done = subprocess.run(
        [*command, images.cloud, "-c", script], capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{processes} process(es) here" in done.stderr
    model = outputs / "models" / "sentiment"
    assert (model / "model.safetensors").is_file()
    assert json.loads((model / "metrics.json").read_text())["global_step"] == steps
    installed = "installing the experiment trackers" in done.stderr
    assert installed == (report_to != "none")
    assert bool(list(model.glob("runs/**/events.out.tfevents.*"))) == (report_to == "tensorboard")


def certificate_lines(pem: str) -> list[bytes]:
    """One distinctive line per certificate: the second base64 line of its body (the first starts alike for all)."""
    lines: list[bytes] = []
    for block in pem.split("-----BEGIN CERTIFICATE-----")[1:]:
        body = block.split("-----END CERTIFICATE-----")[0].split()
        assert len(body) > 2, "malformed certificate"
        lines.append(body[1].encode())
    return lines


def layers_containing(docker: str, image: str, needles: list[bytes]) -> set[bytes]:
    """The needles found anywhere in `docker save IMAGE`: every layer, uncompressed, streamed."""
    found: set[bytes] = set()
    overlap = max(len(needle) for needle in needles)
    tail = b""
    with subprocess.Popen([docker, "save", image], stdout=subprocess.PIPE) as save:
        assert save.stdout is not None
        while chunk := save.stdout.read(16 << 20):
            window = tail + chunk
            found.update(needle for needle in needles if needle in window)
            tail = window[-overlap:]
    assert save.returncode == 0, f"docker save {image} failed"
    return found


def public_bundles(docker: str, image: str) -> str:
    """The CA bundles the image ships on purpose (Debian's, packages' own): a public root there is no leak."""
    read = (
        "import glob, sys; bundles = ['/etc/ssl/certs/ca-certificates.crt'] + "
        "glob.glob(sys.prefix + '/lib/python*/site-packages/**/*.pem', recursive=True); "
        "print(''.join(open(path, errors='replace').read() for path in bundles))"
    )
    command = [docker, "run", "--rm", "--entrypoint", "python", image, "-c", read]
    done = subprocess.run(command, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


@pytest.mark.docker
@pytest.mark.slow
def test_build_ca_secret_is_in_no_layer(docker: str, images: Images, build_ca: Path, tmp_path: Path) -> None:
    shipped = public_bundles(docker, images.runtime)
    needles = [line for line in certificate_lines(build_ca.read_text()) if line.decode() not in shipped]
    assert needles, f"{build_ca} holds only publicly trusted certificates: nothing to look for"
    # The scan finds a certificate that is in a layer: an image that copies it in.
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY ca.pem /\n")
    shutil.copy(build_ca, tmp_path / "ca.pem")
    control = f"{images.name}:ca-control"
    build = [docker, "build", "-q", "-t", control, str(tmp_path)]
    subprocess.run(build, env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, check=True)
    try:
        assert layers_containing(docker, control, needles) == set(needles)
    finally:
        subprocess.run([docker, "image", "rm", "--force", control], capture_output=True, check=False)
    for image in (images.runtime, images.cloud, images.dev):
        assert not layers_containing(docker, image, needles), f"the build's CA certificate is in a layer of {image}"
