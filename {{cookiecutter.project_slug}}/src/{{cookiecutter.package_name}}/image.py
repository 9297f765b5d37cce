"""`uv run build-image` and `uv run serve-image`: the project's images, with the docker CLI and BuildKit.

build  the `runtime` stage of docker/Dockerfile tagged `image.reference` (registry/name:tag) and the `cloud` stage
       tagged `image.cloud_reference` (registry/name:tag-cloud); the build output streams to the terminal.
serve  the runtime image on this machine: `serving.model_dir` mounted read-only at /model, the server listening on
       `serving.port` inside and published on 127.0.0.1 only, LIT_SERVER_API_KEY passed on when set.

Both take settings flags (`uv run build-image --image.tag 0.2.0`). The docker client is `$DOCKER`, else `docker` on
PATH; it must speak BuildKit (`DOCKER_BUILDKIT=1` is set for it). Behind a proxy that intercepts TLS, set
`EXTRA_CA=/path/to/ca.pem`: the certificate reaches the build as the secret `extra_ca` and no image layer.
"""

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from {{ cookiecutter.package_name }}.settings import ENV_PREFIX, Settings, settings_or_exit

DOCKERFILE = Path("docker/Dockerfile")
MODEL_MOUNT = "/model"  # where the image's server reads its model (serving.model_dir in docker/Dockerfile)
CA_MOUNT_ID = "extra_ca"  # the id of the build secret the Dockerfile mounts (RUN --mount=type=secret,id=...)
USAGE = "usage: python -m {{ cookiecutter.package_name }}.image build|serve [--section.field VALUE ...]"


class ImageError(Exception):
    """A problem with the machine or the inputs, phrased for a person in one line."""


def docker_client() -> str:
    """The docker CLI to run: $DOCKER, else `docker` on PATH."""
    chosen = os.environ.get("DOCKER")
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise ImageError(f"DOCKER={chosen} is not an executable docker client")
        return found
    found = shutil.which("docker")
    if found is None:
        raise ImageError("no docker client on PATH: install Docker, or set DOCKER=/path/to/docker")
    return found


def docker_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def require_daemon(docker: str) -> None:
    """One cheap call that fails fast when no engine answers, instead of a build that fails later."""
    done = subprocess.run([docker, "version"], capture_output=True, text=True, env=docker_env(), check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ImageError(f"the Docker daemon does not answer ({reason}); start Docker and retry")


def secret_args(environ: Mapping[str, str]) -> list[str]:
    """`--secret id=extra_ca,src=...` when EXTRA_CA names a CA certificate file."""
    extra_ca = environ.get("EXTRA_CA")
    if not extra_ca:
        return []
    if not Path(extra_ca).is_file():
        raise ImageError(f"EXTRA_CA={extra_ca} is not a file (a PEM certificate the build should trust)")
    return ["--secret", f"id={CA_MOUNT_ID},src={Path(extra_ca).resolve()}"]


def build_commands(docker: str, settings: Settings, secrets: Sequence[str]) -> list[list[str]]:
    """One `docker build` per target; the cloud build reuses every layer of the runtime build."""
    targets = (("runtime", settings.image.reference), ("cloud", settings.image.cloud_reference))
    return [
        [docker, "build", "-f", str(DOCKERFILE), "--target", target, "--tag", reference, *secrets, "."]
        for target, reference in targets
    ]


def build(settings: Settings) -> None:
    if not DOCKERFILE.is_file():
        raise ImageError(f"{DOCKERFILE} not found in {Path.cwd()}: run build-image from the project root")
    secrets = secret_args(os.environ)
    docker = docker_client()
    require_daemon(docker)
    for command in build_commands(docker, settings, secrets):
        print("+ " + " ".join(command), file=sys.stderr, flush=True)
        if subprocess.run(command, env=docker_env(), check=False).returncode != 0:
            raise ImageError(f"docker build of {command[command.index('--tag') + 1]} failed (see the output above)")
    print(f"built {settings.image.reference} (runtime) and {settings.image.cloud_reference} (cloud)", file=sys.stderr)


def host_path(path: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Where `path` is for the Docker engine. Inside the devcontainer the engine is the host's: a path under the
    workspace is the host's side of the workspace mount (HOST_WORKSPACE_FOLDER, set by devcontainer.json)."""
    host, inside = environ.get("HOST_WORKSPACE_FOLDER"), environ.get("WORKSPACE_FOLDER")
    if not (host and inside):
        return path
    try:
        return Path(host) / path.resolve().relative_to(inside)
    except ValueError:
        raise ImageError(
            f"{path} exists only inside the devcontainer, and the host's Docker engine cannot mount it: "
            f"keep it under the workspace ({inside})"
        ) from None


def serve_command(docker: str, settings: Settings) -> list[str]:
    serving = settings.serving
    command = [docker, "run", "--rm", "--init"]
    # The same port on both sides: the server inside listens where the settings say, not on the image's default.
    command += ["--publish", f"127.0.0.1:{serving.port}:{serving.port}"]
    command += ["--env", f"{ENV_PREFIX}SERVING__PORT={serving.port}"]
    command += ["--volume", f"{host_path(serving.model_dir.resolve())}:{MODEL_MOUNT}:ro"]
    if "LIT_SERVER_API_KEY" in os.environ:
        command += ["--env", "LIT_SERVER_API_KEY"]  # by name: the key's value stays out of the process list
    if serving.device == "cuda":
        command += ["--gpus", "all"]
    return [*command, settings.image.reference]


def serve(settings: Settings) -> None:
    model_dir = settings.serving.model_dir
    if not (model_dir / "config.json").is_file():
        raise ImageError(
            f"serving.model_dir {model_dir} holds no trained model (no config.json): "
            "train one with `uv run train-local` or pass --serving.model_dir PATH"
        )
    # The server reads the files at the top of the folder (weights, config, tokenizer, metrics.json), never the
    # Trainer checkpoints below it, which are written owner-only.
    unreadable = [path for path in model_dir.iterdir() if path.is_file() and not path.stat().st_mode & stat.S_IROTH]
    if unreadable:
        raise ImageError(
            f"{unreadable[0]} is readable only by its owner, not by the image's server user: chmod -R a+rX {model_dir}"
        )
    docker = docker_client()
    require_daemon(docker)
    command = serve_command(docker, settings)
    print(f"serving {settings.image.reference} on http://127.0.0.1:{settings.serving.port} (Ctrl-C stops it)")
    sys.stdout.flush()
    os.execve(docker, command, docker_env())  # docker run in this process: signals reach it and the container


ABOUT = {
    "build": "Build the runtime image (registry/name:tag) and the cloud image (tag-cloud) from docker/Dockerfile.",
    "serve": "Run the runtime image here, serving serving.model_dir (read-only) on 127.0.0.1:serving.port.",
}
SECTIONS = {"build": ("image",), "serve": ("serving", "image")}


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m {{ cookiecutter.package_name }}.image build|serve [flags]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    actions = {"build": build, "serve": serve}
    if not args or args[0] not in actions:
        sys.exit(USAGE)
    settings = settings_or_exit(args[1:], about=ABOUT[args[0]], sections=SECTIONS[args[0]])
    try:
        actions[args[0]](settings)
    except ImageError as error:
        sys.exit(f"error: {error}")


def build_main() -> None:
    main(["build", *sys.argv[1:]])


def serve_main() -> None:
    main(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
