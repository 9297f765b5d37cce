"""sky_task.yaml and sky_serve.yaml, baked for every default_cloud, as SkyPilot 0.14.1 itself reads them.

SkyPilot runs as a uv tool (never in an environment of ours: it pins click<8.2), offline and without credentials:
`sky.Task.from_yaml` loads each file, and SkyPilot's CLI parses the plain commands the files' headers give
(`sky launch`, `sky jobs launch`, `sky serve up`) up to the call that would reach its API server.
"""

import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import COMBINATIONS, BakedProject, project_env, uv_binary

SKYPILOT = "skypilot==0.14.1"
CASES = {
    "gcp": {},
    **{name.removeprefix("cloud-"): answers for name, answers in COMBINATIONS.items() if name.startswith("cloud-")},
    "other-answers": COMBINATIONS["python-3.13-other-answers"],  # a registry with a port, a pre-release tag
}
STORES = {"gcp": ["GCS"], "aws": ["S3"], "azure": ["AZURE"], "kubernetes": []}  # kubernetes: SkyPilot picks
UNRENDERED = re.compile(r"(?<!\$)\{\{|\{%|\{#")


def project_probe(project: BakedProject) -> str:
    """The SkyPilot probe script of the baked project's own tests/test_cloud.py (its PROBE string): both the template
    and the generated project check the YAML files through the same script."""
    tree = ast.parse((project.path / "tests" / "test_cloud.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "PROBE" for target in node.targets):
            probe = ast.literal_eval(node.value)
            assert isinstance(probe, str)
            return probe
    raise AssertionError("the baked tests/test_cloud.py defines no PROBE")


REQUESTS = [
    {"yaml": "sky_task.yaml"},
    {"yaml": "sky_serve.yaml"},
    {"sky": ["launch", "sky_task.yaml", "-c", "probe", "-i", "30"]},
    {"sky": ["jobs", "launch", "sky_task.yaml"]},
    {"sky": ["serve", "up", "sky_serve.yaml", "-n", "probe"]},
    {"sky": ["launch", "sky_task.yaml", "-c", "probe", "--infra", "aws", "--env", "OUTPUTS_STORE=s3"]},
]


def skypilot_views(project: BakedProject, home: Path) -> list[dict[str, Any]]:
    uv = uv_binary()
    cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    env = project_env({"HOME": str(home), "UV_CACHE_DIR": cache, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"})
    for name in ("HF_TOKEN", "LIT_SERVER_API_KEY", "SKYPILOT_DOCKER_USERNAME", "SKYPILOT_DOCKER_PASSWORD"):
        env.pop(name, None)
    done = subprocess.run(
        [uv, "tool", "run", "--quiet", "--from", SKYPILOT, "python", "-c", project_probe(project)],
        input=json.dumps(REQUESTS),
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE:")]
    assert done.returncode == 0, f"SkyPilot rejected the YAML:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert lines, done.stdout[-3000:]
    return json.loads(lines[0].removeprefix("PROBE:"))


@pytest.mark.parametrize("case", CASES)
def test_skypilot_reads_both_yaml_files(bake, case: str, tmp_path: Path) -> None:
    project = bake(**CASES[case])
    cloud = project.context["default_cloud"]
    for name in ("sky_task.yaml", "sky_serve.yaml"):
        text = (project.path / name).read_text()
        assert not UNRENDERED.search(text), f"{name} has Jinja left after rendering"
    settings = yaml.safe_load((project.path / "configs/settings.yaml").read_text())
    task_yaml = yaml.safe_load((project.path / "sky_task.yaml").read_text())
    image = settings["image"]
    reference = f"{image['registry']}/{image['name']}:{image['tag']}"  # ImageSettings.reference
    task, service, launch, job, serve_up, on_aws = skypilot_views(project, tmp_path)

    for view in (task, launch, job):
        assert view["image_ids"] == [f"docker:{reference}-cloud"]  # the `cloud` stage, as build-image tags it
        assert view["clouds"] == [cloud]
        gpus = task_yaml["resources"].get("accelerators")  # e.g. "L4:1", or absent for CPU only
        assert view["accelerators"] == [None if gpus is None else {gpus.split(":")[0]: int(gpus.split(":")[1])}]
        assert view["num_nodes"] == task_yaml["num_nodes"]
        assert view["run"].strip() == 'bash "$PROJECT_DIR/scripts/sky_run.sh"'
        assert view["secret_names"] == sorted(task_yaml["secrets"])  # HF_TOKEN and the trackers'
        assert {"HF_TOKEN", "WANDB_API_KEY", "MLFLOW_TRACKING_URI"} <= set(view["secret_names"])
    for view in (service, serve_up):
        assert view["image_ids"] == [f"docker:{reference}"]  # the `runtime` stage
        assert view["clouds"] == [cloud]
        assert view["service"] == {"path": "/health", "headers": {"X-API-Key": ""}}
        assert view["ports"] == [["8000"]]
    for view in (task, service, launch, job, serve_up):
        mount = view["mounts"]["/outputs"]
        assert mount["name"] == f"{project.context['project_slug']}-outputs"
        assert mount["stores"] == STORES[cloud]
    # The store follows the cloud a launch picks (train-cloud sets OUTPUTS_STORE); Kubernetes leaves it to SkyPilot.
    assert on_aws["mounts"]["/outputs"]["stores"] == (["S3"] if cloud != "kubernetes" else [])
    assert task["mounts"]["/outputs"]["mode"] in ("MOUNT", "MOUNT_CACHED")
    output_dir = task["envs"][f"{project.package.upper()}_TRAINING__OUTPUT_DIR"]
    assert output_dir == f"/outputs/{settings['training']['output_dir']}"
    assert service["envs"][f"{project.package.upper()}_SERVING__MODEL_DIR"] == output_dir
