"""`uv run train-cloud` and `uv run serve-cloud`: the project's SkyPilot tasks, in the project's images.

sky_task.yaml and sky_serve.yaml own the cloud side: where (`infra`), the machines, the number of nodes, autostop, the
bucket and its store. Edit them there, or change one launch with `sky` flags, which pass through unchanged
(`--infra aws/us-east-1`, `--gpus A100:8`, `--use-spot`, `--num-nodes 2`, `--env OUTPUTS_BUCKET=...`, `-y`, ...).
This program adds only what the project knows:

- the image `uv run build-image` tagged from the `image` settings (`--image-id`): the `cloud` stage for training, the
  `runtime` stage for serving;
- the model, data and training (or serving) settings that differ from configs/settings.yaml, the file baked into the
  image, as the job's environment variables; training.output_dir (and serving.model_dir) under the bucket mount;
- training inputs given as local paths, uploaded with the job (a copy of sky_task.yaml with file mounts);
- the object store of the cloud the job runs on (OUTPUTS_STORE), so the bucket follows `--infra`;
- secrets by name, never their values on the command line: those the YAML's `secrets:` lists (HF_TOKEN and the
  trackers' for training, LIT_SERVER_API_KEY for serving) that are set here, and a registry login.

`train-cloud` runs `sky launch` (a cluster that stops itself when idle), or with `--managed` `sky jobs launch` (a job
SkyPilot relaunches after a spot preemption and tears down at the end). `serve-cloud` runs `sky serve up`. SkyPilot
runs as a uv tool, `uv tool run --from 'skypilot[<cloud>]==0.14.1' sky ...`, never in the project environment: it pins
click<8.2, which the Hugging Face libraries have outgrown. SkyPilot checks the cloud credentials itself (`sky check`).
Before a real launch this program checks the settings and that the image is built; a dry run (`--print-command`) needs
neither credentials nor images. A problem is one line on stderr and exit code 2.
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

from {{ cookiecutter.package_name }}.settings import (
    DEFAULT_CONFIG,
    ENV_PREFIX,
    HELP_FLAGS,
    SECTIONS,
    Settings,
    SettingsError,
    help_text,
    is_local_reference,
    load_settings,
    print_out,
)

SKYPILOT_VERSION = "0.14.1"
CLOUDS = ("gcp", "aws", "azure", "kubernetes")
INFRA_ALIASES = {"k8s": "kubernetes"}  # `infra` spellings
STORES = {"gcp": "gcs", "aws": "s3", "azure": "azure"}  # each cloud's object store; Kubernetes has none of its own
TASK_YAML = Path("sky_task.yaml")
SERVE_YAML = Path("sky_serve.yaml")
TRAIN_NAME = "{{ cookiecutter.project_slug }}-train"  # the cluster (or managed job) name: a relaunch finds it again
SERVICE_NAME = "{{ cookiecutter.project_slug }}"
MOUNT = PurePosixPath("/outputs")  # where the tasks mount the bucket (file_mounts in both YAML files)
STORE_ENV = "OUTPUTS_STORE"  # the tasks' variable for the bucket's store
# Local training inputs travel with the job: uploaded to these folders on every node (file_mounts of TASK_WITH_INPUTS).
INPUTS = {"model.checkpoint": PurePosixPath("/inputs/checkpoint"), "data.dataset": PurePosixPath("/inputs/dataset")}
TASK_WITH_INPUTS = Path("build/sky_task.yaml")
DOCKER_LOGIN = ("SKYPILOT_DOCKER_USERNAME", "SKYPILOT_DOCKER_PASSWORD", "SKYPILOT_DOCKER_SERVER")
JOB_SECTIONS = {"train": ("model", "data", "training"), "serve": ("serving",)}
# Set by the tasks themselves: the bucket paths, and the address SkyServe's load balancer talks to.
FIXED_FIELDS = {"training.output_dir", "serving.model_dir", "serving.host", "serving.port"}
OWN_FLAGS = {
    "--print-command": "print the command that would run, and run nothing (needs no credentials, no built image)",
    "--managed": "a managed job (sky jobs launch): relaunched after a spot preemption, torn down at the end",
    "--image-pushed": "skip the check that the image exists in the local Docker engine (e.g. CI pushed it)",
}
# Spellings of the `sky` options this program sets: one the user passes, in any spelling, replaces ours.
SKY_OPTION_SPELLINGS = (("-c", "--cluster"), ("-n", "--name", "--service-name"), ("--image-id",))


class CloudError(Exception):
    """A problem found before launching, phrased for a person on one line."""


@dataclass
class Request:
    mode: str  # "train", "managed" or "serve"
    settings_flags: list[str] = field(default_factory=list)
    sky_flags: list[str] = field(default_factory=list)
    print_only: bool = False
    image_pushed: bool = False

    @property
    def yaml_file(self) -> Path:
        return SERVE_YAML if self.mode == "serve" else TASK_YAML


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


def chosen_cloud(yaml_file: Path, sky_flags: Sequence[str]) -> str:
    """The cloud the launch will use: `--infra` among the sky flags, else the YAML file's `resources.infra`."""
    infra = flag_value(sky_flags, ["--infra"])
    if infra is None:
        task = yaml.safe_load(yaml_file.read_text())
        infra = str((task.get("resources") or {}).get("infra") or "") if isinstance(task, dict) else ""
    name = infra.split("/")[0].lower()
    name = INFRA_ALIASES.get(name, name)
    if name not in CLOUDS:
        raise CloudError(f"unknown cloud {name!r} in infra {infra!r}: train-cloud supports {', '.join(CLOUDS)}")
    return name


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
            continue  # an unreadable section: forward the whole of it
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


def local_inputs(settings: Settings) -> dict[str, tuple[Path, PurePosixPath]]:
    """The training inputs given as local paths: setting → (the path here, where the job finds it on the node)."""
    found = {}
    for setting, reference in (
        ("model.checkpoint", settings.model.checkpoint),
        ("data.dataset", settings.data.dataset),
    ):
        if not is_local_reference(reference):
            continue
        local = Path(reference).expanduser().resolve()
        if not local.exists():
            raise CloudError(f"{setting}: local path {reference} does not exist here, so the job has nothing to upload")
        found[setting] = (local, INPUTS[setting] if local.is_dir() else INPUTS[setting] / local.name)
    return found


def task_with_inputs(uploads: Mapping[str, tuple[Path, PurePosixPath]]) -> Path:
    """sky_task.yaml plus a file mount per local input, written to TASK_WITH_INPUTS (SkyPilot uploads them)."""
    task = yaml.safe_load(TASK_YAML.read_text())
    task.setdefault("file_mounts", {}).update({str(remote): str(local) for local, remote in uploads.values()})
    TASK_WITH_INPUTS.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by train-cloud: {TASK_YAML} plus uploads of the local training inputs. Edit {TASK_YAML}.\n"
    TASK_WITH_INPUTS.write_text(header + yaml.safe_dump(task, sort_keys=False))
    return TASK_WITH_INPUTS


def job_environment(
    request: Request, settings: Settings, cloud: str, uploads: Mapping[str, tuple[Path, PurePosixPath]]
) -> dict[str, str]:
    """The job's variables: the bucket's store, the bucket paths, the changed settings, the uploaded inputs."""
    baseline = file_sections(DEFAULT_CONFIG, [*JOB_SECTIONS["train"], *JOB_SECTIONS["serve"]])
    outputs = str(bucket_path(settings.training.output_dir))
    job_env = {STORE_ENV: STORES[cloud]} if cloud in STORES else {}
    if request.mode == "serve":
        job_env[f"{ENV_PREFIX}SERVING__MODEL_DIR"] = outputs
    else:
        job_env[f"{ENV_PREFIX}TRAINING__OUTPUT_DIR"] = outputs
    job_env.update(changed_settings(settings, baseline, JOB_SECTIONS["serve" if request.mode == "serve" else "train"]))
    for setting, (_, remote) in uploads.items():
        section, name = setting.split(".")
        job_env[f"{ENV_PREFIX}{section.upper()}__{name.upper()}"] = str(remote)
    return job_env


def sky_arguments(
    request: Request,
    settings: Settings,
    cloud: str,
    environ: Mapping[str, str],
    uploads: Mapping[str, tuple[Path, PurePosixPath]],
) -> list[str]:
    """Everything after `sky`: the subcommand, the YAML, what the project adds, then the user's `sky` flags."""
    subcommand = {"train": ["launch"], "managed": ["jobs", "launch"], "serve": ["serve", "up"]}[request.mode]
    yaml_file = task_with_inputs(uploads) if uploads else request.yaml_file
    image = settings.image.reference if request.mode == "serve" else settings.image.cloud_reference
    name = {"train": ("-c", TRAIN_NAME), "managed": ("-n", TRAIN_NAME), "serve": ("-n", SERVICE_NAME)}[request.mode]
    arguments = [*subcommand, str(yaml_file)]
    for option, value in (name, ("--image-id", f"docker:{image}")):
        if not user_sets(request.sky_flags, option):
            arguments += [option, value]
    for variable, value in job_environment(request, settings, cloud, uploads).items():
        arguments += ["--env", f"{variable}={value}"]
    # Secrets by name only: `sky` reads their values from this environment, so they never appear in the command.
    for secret in declared_secrets(request.yaml_file):
        arguments += ["--secret", secret] if environ.get(secret) else []
    arguments += docker_login_secrets(environ)
    return [*arguments, *request.sky_flags]


def declared_secrets(yaml_file: Path) -> list[str]:
    """The names under the task's `secrets:` (the YAML owns which secrets a job may receive)."""
    task = yaml.safe_load(yaml_file.read_text()) or {}
    return [str(name) for name in task.get("secrets") or {}]


def uv_binary(environ: Mapping[str, str]) -> str:
    """uv itself (`uv run` sets UV); a pyenv shim can fail inside projects, so a real path is preferred."""
    found = environ.get("UV") or shutil.which("uv")
    if not found:
        raise CloudError("uv is not on PATH: install it (https://docs.astral.sh/uv/) to run SkyPilot as a uv tool")
    return found


def build_command(request: Request, environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The full command line and notes for a person, after every check; raises CloudError or SettingsError."""
    settings = load_settings(request.settings_flags, environ)
    if not request.yaml_file.is_file():
        raise CloudError(f"{request.yaml_file} not found in {Path.cwd()}: run this from the project root")
    cloud = chosen_cloud(request.yaml_file, request.sky_flags)
    uploads = {} if request.mode == "serve" else local_inputs(settings)
    arguments = sky_arguments(request, settings, cloud, environ, uploads)
    image = settings.image.reference if request.mode == "serve" else settings.image.cloud_reference
    if not request.print_only and not request.image_pushed and (problem := image_problem(image)):
        raise CloudError(problem)  # a real launch only: a dry run needs no built image
    tool = ["tool", "run", "--from", f"skypilot[{cloud}]=={SKYPILOT_VERSION}", "sky"]
    notes = [
        f"note: {setting} {local} is uploaded with the job to {remote}" for setting, (local, remote) in uploads.items()
    ]
    return [uv_binary(environ), *tool, *arguments], notes


def main(argv: Sequence[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if any(arg in HELP_FLAGS for arg in arguments):
        own = "\n".join(f"  {flag:<26}{what}" for flag, what in OWN_FLAGS.items())
        sky_help = f"uvx --from 'skypilot=={SKYPILOT_VERSION}' sky launch --help"
        settings_flags = parse_arguments([arg for arg in arguments if arg not in HELP_FLAGS]).settings_flags
        settings = help_text("", SECTIONS, settings_flags)
        print_out(f"{(__doc__ or '').strip()}\n\nOwn flags:\n{own}\n\n`sky` flags: {sky_help}\n\n{settings}")
        return
    try:
        request = parse_arguments(arguments)
        command, notes = build_command(request, os.environ)
    except (CloudError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for note in notes:
        print(note, file=sys.stderr)
    if request.print_only:
        print_out(shlex.join(command))
        return
    print(f"$ {shlex.join(command)}", file=sys.stderr, flush=True)
    os.execv(command[0], command)  # sky takes this process's place: Ctrl-C and its exit code reach the caller


def serve_main() -> None:
    main(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
