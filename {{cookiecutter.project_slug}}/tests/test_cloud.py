"""`train-cloud` and `serve-cloud`: the exact `sky` commands, and SkyPilot's own CLI accepting them, offline.

SkyPilot is never a project dependency: the slow tests run skypilot==0.14.1 as a uv tool (`uv tool run`), parse
the printed command with SkyPilot's CLI and stop it where it would contact its API server. No cloud credentials are
needed or used (SkyPilot checks them itself at a real launch; HOME is a temporary folder).
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from {{ cookiecutter.package_name }}.settings import ENV_PREFIX, Settings

from tests.conftest import BIN, PROJECT, settings_file_values

PACKAGE = "{{ cookiecutter.package_name }}"
SLUG = "{{ cookiecutter.project_slug }}"
SKYPILOT = "skypilot==0.14.1"
CLOUD_NAMES = {"gcp": "gcp", "aws": "aws", "azure": "azure", "k8s": "kubernetes"}  # `infra` → the SkyPilot extra
STORES = {"gcp": "gcs", "aws": "s3", "azure": "azure"}  # the bucket follows the cloud; Kubernetes has no store
TASK = yaml.safe_load((PROJECT / "sky_task.yaml").read_text())  # what owns the cloud side of training
# Secrets of the caller that must not leak into the commands under test.
CLEARED = ("HF_TOKEN", "LIT_SERVER_API_KEY", "SKYPILOT_DOCKER_USERNAME", "SKYPILOT_DOCKER_PASSWORD",
           "SKYPILOT_DOCKER_SERVER")  # fmt: skip
FAKE_UV = "/opt/uv/bin/uv"  # the dry mode prints whatever uv it was given; nothing runs it
DOCKER_LOGIN = {
    "SKYPILOT_DOCKER_USERNAME": "robot",
    "SKYPILOT_DOCKER_PASSWORD": "registry-token-value",
    "SKYPILOT_DOCKER_SERVER": "ghcr.io",
}


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The generated settings file alone: what the images hold and what the dry mode starts from."""
    return settings_file_values()


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without the caller's settings overrides, the Hub switched off, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def run(*command: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), cwd=PROJECT, env=child_env(env), capture_output=True, text=True, timeout=600, check=False
    )


def cloud_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """No cloud state but what `home` holds, no secrets from the caller, and a known uv."""
    env = {"HOME": str(home), "UV": FAKE_UV, **dict.fromkeys(CLEARED, "")}
    return {**env, **(extra or {})}


def cloud_command(*args: str, home: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m <package>.cloud ARGS` (what both tasks run) from the project root."""
    return run(str(BIN / "python"), "-m", f"{PACKAGE}.cloud", *args, env=cloud_env(home, env))


def printed(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr[-2000:]
    return shlex.split(done.stdout)


def task_cloud() -> str:
    """The cloud sky_task.yaml names (its `infra`, first part)."""
    return CLOUD_NAMES[str(TASK["resources"]["infra"]).split("/")[0]]


def store_env(cloud: str) -> list[str]:
    return ["--env", f"OUTPUTS_STORE={STORES[cloud]}"] if cloud in STORES else []


def upload_envs(settings: Settings) -> list[str]:
    """`--env` values pointing the job at its uploaded local inputs (answers given as local paths)."""
    envs = []
    for name, reference in (("MODEL__CHECKPOINT", settings.model.checkpoint), ("DATA__DATASET", settings.data.dataset)):
        if reference.startswith(("/", "./", "../", "~")):
            local = Path(reference).expanduser()
            remote = "/inputs/" + ("checkpoint" if name.startswith("MODEL") else "dataset")
            envs += ["--env", f"{ENV_PREFIX}{name}={remote}" + ("" if local.is_dir() else f"/{local.name}")]
    return envs


def task_file(settings: Settings) -> str:
    """The task YAML a training launch names: sky_task.yaml, or the copy that uploads local inputs."""
    return "build/sky_task.yaml" if upload_envs(settings) else "sky_task.yaml"


def expected_launch(settings: Settings) -> list[str]:
    """The `sky launch` command for the project's settings, written out independently of cloud.py."""
    return [
        FAKE_UV, "tool", "run", "--from", f"skypilot[{task_cloud()}]==0.14.1", "sky",
        "launch", task_file(settings),
        "-c", f"{SLUG}-train",
        "--image-id", f"docker:{settings.image.reference}-cloud",
        *store_env(task_cloud()),
        "--env", f"{ENV_PREFIX}TRAINING__OUTPUT_DIR=/outputs/{settings.training.output_dir.as_posix()}",
        *upload_envs(settings),
    ]  # fmt: skip


def test_dry_mode_prints_the_exact_launch_command(settings: Settings, tmp_path: Path) -> None:
    done = run(str(BIN / "train-cloud"), "--print-command", env=cloud_env(tmp_path))
    assert printed(done) == expected_launch(settings)
    assert settings.image.cloud_reference == f"{settings.image.reference}-cloud"  # what build-image tags


def test_without_dry_mode_the_command_runs_in_place(settings: Settings, tmp_path: Path) -> None:
    # A stand-in for uv that shows what it was given and fails: the launch is that exact command, and its exit code
    # is the task's (the program replaces itself with it, so signals reach it too).
    stand_in = tmp_path / "uv"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\nexit 3\n')
    stand_in.chmod(0o755)
    done = run(str(BIN / "train-cloud"), "--image-pushed", env={**cloud_env(tmp_path), "UV": str(stand_in)})
    assert done.returncode == 3
    assert done.stdout.splitlines() == expected_launch(settings)[1:]
    assert done.stderr.strip().splitlines()[-1] == "$ " + shlex.join([str(stand_in), *expected_launch(settings)[1:]])


def test_changed_settings_reach_the_job_and_sky_flags_change_the_resources(settings: Settings, tmp_path: Path) -> None:
    """The YAML owns the resources; `sky` flags change them for one launch. The bucket's store follows the cloud."""
    flags = ["--training.num_train_epochs", "3", "--model.max_length=64", "--training.output_dir", "models/run-2"]
    sky = ["--infra", "aws/us-east-1", "--gpus", "A100:8", "--use-spot", "--num-nodes", "2"]
    env = {f"{ENV_PREFIX}DATA__MAX_TRAIN_SAMPLES": "null"}
    command = printed(cloud_command("--print-command", *flags, *sky, home=tmp_path, env=env))
    assert command[4] == "skypilot[aws]==0.14.1"  # the cloud named by --infra decides the extra and the store
    assert command[-len(sky) :] == sky
    envs = [command[i + 1] for i, arg in enumerate(command) if arg == "--env"]
    assert envs == [
        "OUTPUTS_STORE=s3",
        f"{ENV_PREFIX}TRAINING__OUTPUT_DIR=/outputs/models/run-2",
        f"{ENV_PREFIX}MODEL__MAX_LENGTH=64",
        f"{ENV_PREFIX}DATA__MAX_TRAIN_SAMPLES=null",
        f"{ENV_PREFIX}TRAINING__NUM_TRAIN_EPOCHS=3.0",
        *upload_envs(settings)[1::2],
    ]


def test_managed_job_mode(settings: Settings, tmp_path: Path) -> None:
    command = printed(cloud_command("--managed", "--print-command", home=tmp_path))
    launch = expected_launch(settings)
    head, rest = launch[: launch.index("launch")], launch[launch.index("--image-id") :]
    # No -c: SkyPilot names the job's cluster itself and tears it down when the job ends.
    assert command == [*head, "jobs", "launch", task_file(settings), "-n", f"{SLUG}-train", *rest]


def test_sky_flags_pass_through_and_replace_ours(tmp_path: Path) -> None:
    extra = ["--dryrun", "--down", "-y", "-c", "mine", "--image-id", "docker:elsewhere:1", "--env", "A=b"]
    command = printed(cloud_command("--print-command", *extra, home=tmp_path))
    assert command[-len(extra) :] == extra
    for option in ("-c", "--image-id"):
        assert command.count(option) == 1, option


def test_secrets_go_by_name_only(tmp_path: Path) -> None:
    env = {"HF_TOKEN": "hf_token_value", "WANDB_API_KEY": "wandb-key-value", **DOCKER_LOGIN}
    done = cloud_command("--print-command", home=tmp_path, env=env)
    command = printed(done)
    secrets = [command[i + 1] for i, arg in enumerate(command) if arg == "--secret"]
    assert secrets == ["HF_TOKEN", "WANDB_API_KEY", *DOCKER_LOGIN]  # the YAML's that are set, then the login
    assert "hf_token_value" not in done.stdout
    assert "wandb-key-value" not in done.stdout
    assert "registry-token-value" not in done.stdout


def test_serve_mode_deploys_the_runtime_image(settings: Settings, tmp_path: Path) -> None:
    env = {"LIT_SERVER_API_KEY": "api-key-value"}
    command = printed(cloud_command("serve", "--print-command", home=tmp_path, env=env))
    service = yaml.safe_load((PROJECT / "sky_serve.yaml").read_text())
    cloud = CLOUD_NAMES[str(service["resources"]["infra"]).split("/")[0]]
    assert command == [
        FAKE_UV, "tool", "run", "--from", f"skypilot[{cloud}]==0.14.1", "sky",
        "serve", "up", "sky_serve.yaml",
        "-n", SLUG,
        "--image-id", f"docker:{settings.image.reference}",
        *store_env(cloud),
        "--env", f"{ENV_PREFIX}SERVING__MODEL_DIR=/outputs/{settings.training.output_dir.as_posix()}",
        "--secret", "LIT_SERVER_API_KEY",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            [], {"SKYPILOT_DOCKER_USERNAME": "robot"},
            "SKYPILOT_DOCKER_PASSWORD, SKYPILOT_DOCKER_SERVER not set", id="partial-registry-login",
        ),
        pytest.param(["--infra", "lambda/us-1"], {}, "unknown cloud 'lambda'", id="unknown-cloud-in-infra"),
        pytest.param(["--cloud.bucket", "x"], {}, "cloud: unknown setting", id="resources-are-not-settings"),
        pytest.param(["--image.tag", ""], {}, "image.tag: String should have at least 1 character", id="bad-setting"),
        pytest.param(["--training.output_dir", "/abs/out"], {}, "must be a relative path", id="absolute-output-dir"),
        pytest.param(["serve", "--managed"], {}, "--managed is for training", id="managed-serve"),
        pytest.param(["--print-command=yes"], {}, "--print-command takes no value", id="flag-with-value"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_launches_nothing(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    first = ["serve"] if args[:1] == ["serve"] else []
    done = cloud_command(*first, "--print-command", *args[len(first) :], home=tmp_path, env=env)
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""  # no command
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert message in done.stderr, done.stderr


def test_an_image_that_is_not_built_stops_the_launch(settings: Settings, tmp_path: Path) -> None:
    tag = f"never-built-{uuid.uuid4().hex[:8]}"
    done = cloud_command("--image.tag", tag, home=tmp_path)
    reference = settings.image.model_copy(update={"tag": tag}).cloud_reference
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # With Docker: "not built here"; without: "cannot check". Either way the image is named and nothing runs.
    assert done.stderr.startswith("error: ")
    assert reference in done.stderr
    assert "--image-pushed" in done.stderr


@pytest.mark.parametrize("mode", [[], ["serve"]], ids=["train-cloud", "serve-cloud"])
def test_a_dry_run_needs_no_credentials_and_no_built_image(mode: list[str], tmp_path: Path) -> None:
    tag = f"never-built-{uuid.uuid4().hex[:8]}"
    done = cloud_command(*mode, "--print-command", "--image.tag", tag, home=tmp_path / "empty-home")
    command = printed(done)
    assert command[command.index("sky") + 1] == ("serve" if mode else "launch")
    assert any(tag in arg for arg in command)


def test_local_inputs_travel_with_the_job(
    settings: Settings, tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    """A local checkpoint folder and dataset file are uploaded to every node, and the job's settings point there."""
    dataset = review_data / "train.csv"
    flags = ["--model.checkpoint", str(tiny_checkpoint), "--data.dataset", str(dataset)]
    done = cloud_command("--print-command", *flags, home=tmp_path)
    command = printed(done)
    assert command[command.index("launch") + 1] == "build/sky_task.yaml"
    envs = [command[i + 1] for i, arg in enumerate(command) if arg == "--env"]
    assert f"{ENV_PREFIX}MODEL__CHECKPOINT=/inputs/checkpoint" in envs
    assert f"{ENV_PREFIX}DATA__DATASET=/inputs/dataset/train.csv" in envs
    task = yaml.safe_load((PROJECT / "build" / "sky_task.yaml").read_text())
    assert task["file_mounts"]["/inputs/checkpoint"] == str(tiny_checkpoint)
    assert task["file_mounts"]["/inputs/dataset/train.csv"] == str(dataset)
    assert (
        task["file_mounts"]["/outputs"]
        == yaml.safe_load((PROJECT / "sky_task.yaml").read_text())["file_mounts"]["/outputs"]
    )
    assert f"note: model.checkpoint {tiny_checkpoint} is uploaded with the job" in done.stderr
    missing = cloud_command("--print-command", "--data.dataset", str(tmp_path / "gone.csv"), home=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"error: data.dataset: local path {tmp_path / 'gone.csv'} does not exist here, so the job has nothing to upload"
    )


# --- SkyPilot's own CLI, as a uv tool -----------------------------------------------------------------------------

# Runs in SkyPilot's environment: for each request, load a YAML file with `sky.Task.from_yaml`, or parse a `sky`
# command line with SkyPilot's CLI and stop it at the call that would reach its API server. Prints JSON facts.
PROBE = r"""
import json, sys
import sky
from sky.client.cli import command

class Captured(Exception):
    pass

def capture(task_or_dag, *args, **kwargs):
    raise Captured(task_or_dag, kwargs)

def facts(task, extra):
    rs = list(task.resources)
    out = {
        "name": task.name, "num_nodes": task.num_nodes, "run": task.run, "envs": dict(task.envs),
        "secret_names": sorted(task.secrets),
        "image_ids": sorted({str(v) for r in rs for v in (r.image_id or {}).values()}),
        "clouds": sorted({str(r.cloud).lower() for r in rs if r.cloud}),
        "accelerators": [r.accelerators for r in rs], "use_spot": [r.use_spot for r in rs],
        "autostop": [r.autostop_config.idle_minutes if r.autostop_config else None for r in rs],
        "docker_login": [r.docker_login_config is not None for r in rs], "ports": [r.ports for r in rs],
        "mounts": {path: {"name": s.name, "mode": s.mode.value, "stores": sorted(t.value for t in s.stores)}
                   for path, s in task.storage_mounts.items()},
        "file_mounts": dict(task.file_mounts or {}),
        **extra,
    }
    if task.service is not None:
        out["service"] = {"path": task.service.readiness_path, "headers": task.service.readiness_headers}
    return out

sky.client.sdk.launch = sky.jobs.launch = sky.serve.up = capture
results = []
for request in json.load(sys.stdin):
    if "yaml" in request:
        results.append(facts(sky.Task.from_yaml(request["yaml"]), {}))
        continue
    try:
        command.cli.main(args=request["sky"], prog_name="sky", standalone_mode=False)
        results.append({"error": "the command ended before it would launch"})
    except Captured as done:
        task_or_dag, kwargs = done.args
        task = task_or_dag.tasks[0] if hasattr(task_or_dag, "tasks") else task_or_dag
        plain = {k: v for k, v in kwargs.items() if isinstance(v, (bool, int, str, type(None)))}
        results.append(facts(task, plain))
print("PROBE:" + json.dumps(results, default=str))
"""


def uv_binary() -> str:
    """The real uv (pyenv's shim fails inside projects whose .python-version names another Python)."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found and "/shims/" in found and shutil.which("pyenv"):
        found = subprocess.run(["pyenv", "which", "uv"], capture_output=True, text=True, check=True).stdout.strip()
    if not found:
        pytest.fail("uv is not on PATH (set UV=/path/to/uv): SkyPilot runs as a uv tool")
    return found


def skypilot_probe(requests: list[dict[str, Any]], home: Path, env: Mapping[str, str]) -> list[dict[str, Any]]:
    uv = uv_binary()
    cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    probe_env = child_env({**cloud_env(home, env), "UV_CACHE_DIR": cache, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"})
    done = subprocess.run(
        [uv, "tool", "run", "--quiet", "--from", SKYPILOT, "python", "-c", PROBE], check=False,
        input=json.dumps(requests), cwd=PROJECT, env=probe_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE:")]
    assert done.returncode == 0, f"SkyPilot rejected it:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert lines, done.stdout[-3000:]
    results: list[dict[str, Any]] = json.loads(lines[0].removeprefix("PROBE:"))
    return results


@pytest.fixture(scope="module")
def skypilot_views(
    settings: Settings, tiny_checkpoint: Path, review_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """What SkyPilot makes of both YAML files and of the four commands the dry mode prints."""
    home = tmp_path_factory.mktemp("home")
    env = {"HF_TOKEN": "hf_token_value", "LIT_SERVER_API_KEY": "api-key-value", **DOCKER_LOGIN}
    commands = []
    local_inputs = ["--model.checkpoint", str(tiny_checkpoint), "--data.dataset", str(review_data)]
    for args in ([], ["--managed"], ["serve"], local_inputs):
        command = printed(cloud_command(*args, "--print-command", home=home, env=env))
        commands.append({"sky": command[command.index("sky") + 1 :]})
    return skypilot_probe([{"yaml": "sky_task.yaml"}, {"yaml": "sky_serve.yaml"}, *commands], home, env)


@pytest.mark.slow
def test_skypilot_loads_the_yaml_files_with_the_images_build_image_tags(
    settings: Settings, skypilot_views: list[dict[str, Any]]
) -> None:
    task, service = skypilot_views[:2]
    assert task["image_ids"] == [f"docker:{settings.image.reference}-cloud"]
    assert service["image_ids"] == [f"docker:{settings.image.reference}"]
    assert task["clouds"] == service["clouds"] == [task_cloud()]
    for view in (task, service):
        mount = view["mounts"]["/outputs"]
        assert mount["name"] == TASK["envs"]["OUTPUTS_BUCKET"]
        assert mount["mode"] in ("MOUNT", "MOUNT_CACHED")
    assert task["run"].strip() == 'bash "$PROJECT_DIR/scripts/sky_run.sh"'
    assert task["envs"][f"{ENV_PREFIX}TRAINING__OUTPUT_DIR"].startswith("/outputs/")
    assert task["secret_names"] == sorted(TASK["secrets"])
    assert {"HF_TOKEN", "WANDB_API_KEY", "MLFLOW_TRACKING_URI"} <= set(TASK["secrets"])
    assert service["service"] == {"path": "/health", "headers": {"X-API-Key": ""}}
    assert service["ports"] == [["8000"]]


@pytest.mark.slow
def test_skypilot_accepts_the_launch_command(settings: Settings, skypilot_views: list[dict[str, Any]]) -> None:
    launch = skypilot_views[2]
    assert launch["cluster_name"] == f"{SLUG}-train"
    assert launch["autostop"] == [TASK["resources"]["autostop"]]  # the YAML owns the resources
    assert launch["image_ids"] == [f"docker:{settings.image.reference}-cloud"]
    assert launch["num_nodes"] == TASK["num_nodes"]
    assert launch["secret_names"] == sorted([*TASK["secrets"], *DOCKER_LOGIN])
    assert launch["docker_login"] == [True]  # SkyPilot logs in to the registry before pulling the image
    assert launch["envs"]["OUTPUTS_BUCKET"] == TASK["envs"]["OUTPUTS_BUCKET"]
    assert launch["mounts"]["/outputs"]["stores"] == ([STORES[task_cloud()].upper()] if task_cloud() in STORES else [])


@pytest.mark.slow
def test_skypilot_accepts_the_managed_job_command(settings: Settings, skypilot_views: list[dict[str, Any]]) -> None:
    job = skypilot_views[3]
    assert "cluster_name" not in job
    assert "error" not in job
    assert job["name"] == f"{SLUG}-train"
    assert job["image_ids"] == [f"docker:{settings.image.reference}-cloud"]


@pytest.mark.slow
def test_skypilot_accepts_the_serve_command(settings: Settings, skypilot_views: list[dict[str, Any]]) -> None:
    service = skypilot_views[4]
    assert service["image_ids"] == [f"docker:{settings.image.reference}"]
    assert service["service"] == {"path": "/health", "headers": {"X-API-Key": "api-key-value"}}
    model_dir = service["envs"][f"{ENV_PREFIX}SERVING__MODEL_DIR"]
    assert model_dir == f"/outputs/{settings.training.output_dir.as_posix()}"  # where train-cloud saved it


@pytest.mark.slow
def test_skypilot_uploads_the_local_inputs(
    tiny_checkpoint: Path, review_data: Path, skypilot_views: list[dict[str, Any]]
) -> None:
    launch = skypilot_views[5]
    assert launch["file_mounts"] == {"/inputs/checkpoint": str(tiny_checkpoint), "/inputs/dataset": str(review_data)}
    assert launch["envs"][f"{ENV_PREFIX}MODEL__CHECKPOINT"] == "/inputs/checkpoint"
    assert launch["envs"][f"{ENV_PREFIX}DATA__DATASET"] == "/inputs/dataset"
    assert "/outputs" in launch["mounts"]  # the bucket stays


# --- scripts/sky_run.sh, outside SkyPilot ---------------------------------------------------------------------------

RUN_SCRIPT = PROJECT / "scripts" / "sky_run.sh"


def run_script(rank: int, env: Mapping[str, str], *flags: str) -> subprocess.Popen[str]:
    node_env = child_env({**env, "SKYPILOT_NODE_RANK": str(rank), "PYTHON": sys.executable})
    return subprocess.Popen(
        ["bash", str(RUN_SCRIPT), *flags], cwd=PROJECT, env=node_env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.slow
def test_run_script_joins_two_nodes_into_one_training_job(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    # Two "nodes" on loopback, one CPU process each: accelerate (torchrun) forms one gloo group of two processes.
    env = {
        "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NODE_IPS": "127.0.0.1\n127.0.0.1", "SKYPILOT_NUM_GPUS_PER_NODE": "0",
        "MAIN_PROCESS_PORT": str(29500 + os.getpid() % 1000), f"{ENV_PREFIX}TRAINING__OUTPUT_DIR": str(tmp_path),
    }  # fmt: skip
    flags = ["--model.checkpoint", str(tiny_checkpoint), "--model.max_length", "32", "--data.dataset", str(review_data)]
    nodes = [run_script(rank, env, *flags) for rank in (1, 0)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(output[-2000:] for output in outputs)
    assert "node 0 of 2, 1 process(es) here, 2 in all, head 127.0.0.1" in outputs[1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 200 reviews, batch 16 per process, 2 processes: 7 steps per epoch (13 with one process).
    assert metrics["global_step"] == 7


def test_run_script_rejects_bad_settings_before_launching(tmp_path: Path) -> None:
    node = run_script(0, {"SKYPILOT_NUM_GPUS_PER_NODE": "0"}, "--training.num_train_epochs", "abc")
    output = node.communicate(timeout=120)[0]
    assert node.returncode == 2
    assert output.strip().splitlines() == [
        "error: training.num_train_epochs: Input should be a valid number, unable to parse string as a number "
        "(got 'abc')"
    ]


def test_run_script_help_is_the_training_modules_and_starts_nothing(tmp_path: Path) -> None:
    env = {"SKYPILOT_NUM_GPUS_PER_NODE": "0", f"{ENV_PREFIX}TRAINING__OUTPUT_DIR": str(tmp_path / "model")}
    node = run_script(0, env, "--training.num_train_epochs", "abc", "--help")
    output = node.communicate(timeout=120)[0]
    assert node.returncode == 0, output
    assert "--training.num_train_epochs" in output
    assert "sky_run.sh: node" not in output, "--help launched training"
    assert not (tmp_path / "model").exists()
