"""`uv run train-cloud` and `uv run serve-cloud`: train and serve on a cloud with SkyPilot, in the project's images.

`train-cloud` runs sky_task.yaml with `sky launch` on a cluster that stops itself when idle
(`cloud.idle_minutes_to_autostop`), or with `--managed` as a managed job (`sky jobs launch`) that SkyPilot relaunches
after a spot preemption and tears down at the end. `serve-cloud` deploys sky_serve.yaml with `sky serve up` (its
task runs this module with the argument `serve`). The images are the ones `uv run build-image` tags from the `image`
settings: the `cloud` stage (`<registry>/<name>:<tag>-cloud`) for training, the `runtime` stage
(`<registry>/<name>:<tag>`) for serving. Resources, bucket and image come from the `cloud` and `image` settings as
`sky` flags.

SkyPilot runs as a uv tool, `uv tool run --from 'skypilot[<cloud>]==0.14.1' sky ...`, never in the project
environment: it pins click<8.2, which the Hugging Face libraries have outgrown.

Arguments: settings flags as for train-local (`--section.field VALUE`, `--config PATH`); the model, data and training
settings that differ from configs/settings.yaml (the file baked into the image) reach the job as environment
variables. This program's own flags are listed by `--help`; anything else goes to `sky` unchanged (`--dryrun`, `--down`,
`-y`, `--infra aws/us-east-1`, `-c NAME`, ...). Every check runs before anything starts; a problem is one line on
stderr and exit code 2.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from {{ cookiecutter.package_name }}.settings import DEFAULT_CONFIG, ENV_PREFIX, Settings, SettingsError, load_settings

SKYPILOT_VERSION = "0.14.1"
CLOUDS = ("gcp", "aws", "azure", "kubernetes")
INFRA_NAMES = {"gcp": "gcp", "aws": "aws", "azure": "azure", "kubernetes": "k8s"}  # `--infra` spellings
INFRA_ALIASES = {"k8s": "kubernetes"}
TASK_YAML = Path("sky_task.yaml")
SERVE_YAML = Path("sky_serve.yaml")
TRAIN_NAME = "{{ cookiecutter.project_slug }}-train"  # the cluster (or managed job) name: a relaunch finds it again
SERVICE_NAME = "{{ cookiecutter.project_slug }}"
MOUNT = PurePosixPath("/outputs")  # where the tasks mount the bucket (file_mounts in both YAML files)
BUCKET_ENV = "OUTPUTS_BUCKET"  # the tasks' bucket name variable
DOCKER_LOGIN = ("SKYPILOT_DOCKER_USERNAME", "SKYPILOT_DOCKER_PASSWORD", "SKYPILOT_DOCKER_SERVER")
JOB_SECTIONS = {"train": ("model", "data", "training"), "serve": ("serving",)}
# Set by the tasks themselves: the bucket paths, and the address SkyServe's load balancer talks to.
FIXED_FIELDS = {"training.output_dir", "serving.model_dir", "serving.host", "serving.port"}
OWN_FLAGS = {
    "--print-command": "print the command that would run, and run nothing",
    "--managed": "a managed job (sky jobs launch): relaunched after a spot preemption, torn down at the end",
    "--image-pushed": "skip the check that the image exists in the local Docker engine (e.g. CI pushed it)",
    "--skip-credentials-check": "skip the check for the chosen cloud's credential files",
}
# Spellings of the `sky` options this program sets: one the user passes, in any spelling, replaces ours.
SKY_OPTION_SPELLINGS = (
    ("-c", "--cluster"),
    ("-n", "--name", "--service-name"),
    ("-i", "--idle-minutes-to-autostop"),
    ("--use-spot", "--no-use-spot"),
)


class CloudError(Exception):
    """A problem found before launching, phrased for a person on one line."""


@dataclass
class Request:
    mode: str  # "train", "managed" or "serve"
    settings_flags: list[str] = field(default_factory=list)
    sky_flags: list[str] = field(default_factory=list)
    print_only: bool = False
    image_pushed: bool = False
    skip_credentials_check: bool = False


def parse_arguments(argv: Sequence[str]) -> Request:
    """Split the command line into settings flags (`--a.b`, `--config`), this program's flags and `sky` flags."""
    args = list(argv)
    mode = "serve" if args[:1] == ["serve"] else "train"
    request = Request(mode)
    args = args[1:] if mode == "serve" else args
    while args:
        arg = args.pop(0)
        name = arg.partition("=")[0]
        if name in OWN_FLAGS:
            if "=" in arg:
                raise CloudError(f"{name} takes no value")
            request.print_only |= name == "--print-command"
            request.image_pushed |= name == "--image-pushed"
            request.skip_credentials_check |= name == "--skip-credentials-check"
            if name == "--managed":
                if mode == "serve":
                    raise CloudError("--managed is for training; serve deploys a SkyServe service")
                request.mode = "managed"
        elif name.startswith("--") and ("." in name or name == "--config"):
            request.settings_flags.append(arg)
            if "=" not in arg and args:
                request.settings_flags.append(args.pop(0))
        else:
            request.sky_flags.append(arg)
    return request


def flag_value(flags: Sequence[str], names: Sequence[str]) -> str | None:
    """The last value given to any spelling of an option in `flags` (`--x V`, `--x=V`), or None."""
    found = None
    for position, arg in enumerate(flags):
        name, has_value, value = arg.partition("=")
        if name in names:
            found = value if has_value else (flags[position + 1] if position + 1 < len(flags) else "")
    return found


def user_sets(sky_flags: Sequence[str], option: str) -> bool:
    """Whether the user's `sky` flags give `option` in any of its spellings."""
    spellings = next((group for group in SKY_OPTION_SPELLINGS if option in group), (option,))
    return any(arg.partition("=")[0] in spellings for arg in sky_flags)


def chosen_cloud(settings: Settings, sky_flags: Sequence[str]) -> str:
    """The cloud the launch will use: `--infra` among the sky flags, else `cloud.cloud`."""
    infra = flag_value(sky_flags, ["--infra"])
    if infra is None:
        return settings.cloud.cloud
    name = infra.split("/")[0].lower()
    name = INFRA_ALIASES.get(name, name)
    if name not in CLOUDS:
        raise CloudError(f"unknown cloud {name!r} in --infra {infra}: train-cloud supports {', '.join(CLOUDS)}")
    return name


def credential_problem(cloud: str, environ: Mapping[str, str], home: Path) -> str | None:
    """Why the cloud's credentials look absent (cheap file and variable checks), or None when something is there."""

    def any_file(*paths: Path) -> bool:
        return any(path.exists() for path in paths)

    def env_path(name: str, default: Path) -> Path:
        return Path(environ[name]).expanduser() if environ.get(name) else default

    if cloud == "gcp":
        found = any_file(env_path("CLOUDSDK_CONFIG", home / ".config/gcloud"))
        found |= bool(environ.get("GOOGLE_APPLICATION_CREDENTIALS")) and any_file(
            Path(environ["GOOGLE_APPLICATION_CREDENTIALS"]).expanduser()
        )
        where = "~/.config/gcloud or $GOOGLE_APPLICATION_CREDENTIALS"
        login = "run `gcloud auth application-default login`"
    elif cloud == "aws":
        found = bool(environ.get("AWS_ACCESS_KEY_ID")) or any_file(
            env_path("AWS_SHARED_CREDENTIALS_FILE", home / ".aws/credentials"),
            env_path("AWS_CONFIG_FILE", home / ".aws/config"),
        )
        where, login = "~/.aws/credentials, ~/.aws/config or $AWS_ACCESS_KEY_ID", "run `aws configure`"
    elif cloud == "azure":
        found = any_file(env_path("AZURE_CONFIG_DIR", home / ".azure"))
        where, login = "~/.azure", "run `az login`"
    else:
        configs = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        found = any_file(*(configs or [home / ".kube/config"]))
        where, login = "$KUBECONFIG or ~/.kube/config", "write a kubeconfig for your cluster"
    if found:
        return None
    return (
        f"no {cloud} credentials found ({where}): {login} and check with "
        f"`uvx --from 'skypilot[{cloud}]=={SKYPILOT_VERSION}' sky check {cloud}`, or pass --skip-credentials-check"
    )


def docker_login_secrets(environ: Mapping[str, str]) -> list[str]:
    """`--secret NAME` for the private-registry login: all three variables, or none of them."""
    present = [name for name in DOCKER_LOGIN if environ.get(name)]
    if present and len(present) < len(DOCKER_LOGIN):
        missing = ", ".join(name for name in DOCKER_LOGIN if name not in present)
        raise CloudError(f"registry login needs all of {', '.join(DOCKER_LOGIN)}; {missing} not set")
    return [arg for name in present for arg in ("--secret", name)]


def image_problem(reference: str) -> str | None:
    """Why `reference` is not an image in the local Docker engine (a proxy for "built and pushed"), or None."""
    hint = f"run `uv run build-image` and `docker push {reference}`, or pass --image-pushed when CI pushed it"
    docker = shutil.which("docker")
    if docker is None:
        return f"cannot check that the image {reference} exists without docker: push it, then pass --image-pushed"
    try:
        done = subprocess.run(
            [docker, "image", "inspect", reference], check=False, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return f"cannot check that the image {reference} exists: `docker image inspect` took over 60 s"
    if done.returncode == 0:
        return None
    reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if "no such image" in reason.lower():
        return f"the image {reference} is not built here: {hint}"
    return f"cannot check that the image {reference} exists ({reason}): {hint}"


def bucket_path(output_dir: Path) -> PurePosixPath:
    """training.output_dir as the job sees it: the same relative path under the bucket mount."""
    relative = PurePosixPath(output_dir.as_posix())
    if relative.is_absolute() or ".." in relative.parts:
        raise CloudError(
            f"training.output_dir {output_dir} must be a relative path for cloud runs: it is kept under the bucket "
            f"mount {MOUNT} (e.g. models/sentiment)"
        )
    return MOUNT / relative


def env_text(value: Any) -> str:
    """A setting as an environment variable value the settings loader reads back (JSON for non-strings)."""
    return value if isinstance(value, str) else json.dumps(value)


def file_sections(path: Path, sections: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Sections of the settings file alone (what the image holds), without environment or flags; unreadable: {}."""
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    found = {}
    for section in sections:
        model = Settings.model_fields[section].annotation
        if not (isinstance(values, dict) and isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        try:
            found[section] = model.model_validate(values.get(section)).model_dump(mode="json")
        except ValidationError:
            continue  # e.g. a local path that is not here: forward the whole section
    return found


def changed_settings(
    effective: Settings, baseline: Mapping[str, dict[str, Any]], sections: Sequence[str]
) -> dict[str, str]:
    """The job's settings that differ from configs/settings.yaml alone, as the job's environment variables."""
    changed = {}
    for section in sections:
        now = getattr(effective, section).model_dump(mode="json")
        before = baseline.get(section, {})
        for name, value in now.items():
            if f"{section}.{name}" in FIXED_FIELDS or (name in before and before[name] == value):
                continue
            changed[f"{ENV_PREFIX}{section.upper()}__{name.upper()}"] = env_text(value)
    return changed


def resource_options(settings: Settings, cloud: str, mode: str) -> list[tuple[str, str | None]]:
    """`sky` options from the `cloud` and `image` settings: (option, value), value None for a switch."""
    region = f"/{settings.cloud.region}" if settings.cloud.region else ""
    options: list[tuple[str, str | None]] = [("--infra", INFRA_NAMES[cloud] + region)]
    if mode == "serve":  # the service's machines are sized in sky_serve.yaml: serving needs no training GPU
        return [("-n", SERVICE_NAME), *options, ("--image-id", f"docker:{settings.image.reference}")]
    options.append(("--image-id", f"docker:{settings.image.cloud_reference}"))
    options.append(("--gpus", settings.cloud.accelerators or "none"))
    options.append(("--cpus", settings.cloud.cpus))
    if settings.cloud.memory:
        options.append(("--memory", settings.cloud.memory))
    options.append(("--disk-size", str(settings.cloud.disk_size)))
    options.append(("--use-spot" if settings.cloud.use_spot else "--no-use-spot", None))
    options.append(("--num-nodes", str(settings.cloud.num_nodes)))
    if mode == "managed":
        return [("-n", TRAIN_NAME), *options]
    autostop = settings.cloud.idle_minutes_to_autostop
    return [("-c", TRAIN_NAME), *([("-i", str(autostop))] if autostop is not None else []), *options]


def sky_arguments(
    request: Request, settings: Settings, baseline: Mapping[str, dict[str, Any]], cloud: str, environ: Mapping[str, str]
) -> list[str]:
    """Everything after `sky`: the subcommand, the YAML, options from the settings, then the user's `sky` flags."""
    subcommand = {"train": ["launch"], "managed": ["jobs", "launch"], "serve": ["serve", "up"]}[request.mode]
    yaml_file = SERVE_YAML if request.mode == "serve" else TASK_YAML
    arguments = [*subcommand, str(yaml_file)]
    for option, value in resource_options(settings, cloud, request.mode):
        if not user_sets(request.sky_flags, option):
            arguments += [option] if value is None else [option, value]
    outputs = bucket_path(settings.training.output_dir)
    job_env = {BUCKET_ENV: settings.cloud.bucket}
    if request.mode == "serve":
        job_env[f"{ENV_PREFIX}SERVING__MODEL_DIR"] = str(outputs)
    else:
        job_env[f"{ENV_PREFIX}TRAINING__OUTPUT_DIR"] = str(outputs)
    sections = JOB_SECTIONS["serve" if request.mode == "serve" else "train"]
    job_env.update(changed_settings(settings, baseline, sections))
    for name, value in job_env.items():
        arguments += ["--env", f"{name}={value}"]
    # Secrets by name only: `sky` reads their values from this environment, so they never appear in the command.
    secret = "LIT_SERVER_API_KEY" if request.mode == "serve" else "HF_TOKEN"
    arguments += ["--secret", secret] if environ.get(secret) else []
    arguments += docker_login_secrets(environ)
    return [*arguments, *request.sky_flags]


def uv_binary(environ: Mapping[str, str]) -> str:
    """uv itself (`uv run` sets UV); a pyenv shim can fail inside projects, so a real path is preferred."""
    found = environ.get("UV") or shutil.which("uv")
    if not found:
        raise CloudError("uv is not on PATH: install it (https://docs.astral.sh/uv/) to run SkyPilot as a uv tool")
    return found


def build_command(request: Request, environ: Mapping[str, str], home: Path) -> list[str]:
    """The full command line, after every check; raises CloudError or SettingsError."""
    settings = load_settings(request.settings_flags, environ)
    baseline = file_sections(DEFAULT_CONFIG, [*JOB_SECTIONS["train"], *JOB_SECTIONS["serve"]])
    cloud = chosen_cloud(settings, request.sky_flags)
    yaml_file = SERVE_YAML if request.mode == "serve" else TASK_YAML
    if not yaml_file.is_file():
        raise CloudError(f"{yaml_file} not found in {Path.cwd()}: run this from the project root")
    arguments = sky_arguments(request, settings, baseline, cloud, environ)
    if not request.skip_credentials_check and (problem := credential_problem(cloud, environ, home)):
        raise CloudError(problem)
    image = settings.image.reference if request.mode == "serve" else settings.image.cloud_reference
    if not request.image_pushed and (problem := image_problem(image)):
        raise CloudError(problem)
    tool = ["tool", "run", "--from", f"skypilot[{cloud}]=={SKYPILOT_VERSION}", "sky"]
    return [uv_binary(environ), *tool, *arguments]


def main(argv: Sequence[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] in (["-h"], ["--help"]):
        own = "\n".join(f"  {flag:<26}{what}" for flag, what in OWN_FLAGS.items())
        sky_help = f"uvx --from 'skypilot=={SKYPILOT_VERSION}' sky launch --help"
        print(f"{(__doc__ or '').strip()}\n\nOwn flags:\n{own}\n\n`sky` flags: {sky_help}")
        return
    try:
        request = parse_arguments(arguments)
        command = build_command(request, os.environ, Path.home())
    except (CloudError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if request.print_only:
        print(shlex.join(command))
        return
    print(f"$ {shlex.join(command)}", file=sys.stderr, flush=True)
    os.execv(command[0], command)  # sky takes this process's place: Ctrl-C and its exit code reach the caller


if __name__ == "__main__":
    main()
