"""Values that files which cannot read the settings restate (Dockerfile, devcontainer.json, the SkyPilot YAMLs),
checked against their owner: change the owner, and this test names each place that still holds the old value.

- the local server's port: configs/settings.yaml (serving.port); the devcontainers forward it;
- the image's port and model folder: docker/Dockerfile's ENV; EXPOSE and sky_serve.yaml restate the port,
  image.py mounts the model there;
- where a cloud job keeps the model: training.output_dir under the bucket mount, as train-cloud and serve-cloud send
  it; the YAMLs' own values (for `sky` by hand) restate it.
"""

import json
import re
from typing import Any

import yaml

from {{ cookiecutter.package_name }}.cloud import MOUNT, bucket_path
from {{ cookiecutter.package_name }}.image import MODEL_MOUNT
from {{ cookiecutter.package_name }}.settings import ENV_PREFIX

from tests.conftest import PROJECT, settings_file_values

DOCKERFILE = (PROJECT / "docker" / "Dockerfile").read_text()


def dockerfile_env(name: str) -> str:
    (value,) = re.findall(rf"\b{ENV_PREFIX}{name}=(\S+)", DOCKERFILE)
    return str(value)


def sky_yaml(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROJECT / name).read_text())
    return loaded


def test_the_devcontainers_forward_the_settings_port() -> None:
    port = settings_file_values().serving.port
    for flavour in ("cpu", "cuda"):
        config = json.loads((PROJECT / ".devcontainer" / flavour / "devcontainer.json").read_text())
        assert config["forwardPorts"] == [port], f".devcontainer/{flavour}/devcontainer.json: forwardPorts [{port}]"


def test_the_image_port_is_exposed_and_served_by_skyserve() -> None:
    port = int(dockerfile_env("SERVING__PORT"))
    assert re.findall(r"^EXPOSE (\d+)$", DOCKERFILE, re.MULTILINE) == [str(port)], f"docker/Dockerfile: EXPOSE {port}"
    service = sky_yaml("sky_serve.yaml")
    assert service["resources"]["ports"] == port, f"sky_serve.yaml: resources.ports {port}"
    assert service["envs"][f"{ENV_PREFIX}SERVING__PORT"] == str(port), f"sky_serve.yaml: envs …SERVING__PORT {port}"


def test_the_image_serves_the_folder_serve_image_mounts() -> None:
    assert dockerfile_env("SERVING__MODEL_DIR") == MODEL_MOUNT


def test_the_cloud_tasks_keep_the_model_where_train_cloud_puts_it() -> None:
    in_bucket = str(bucket_path(settings_file_values().training.output_dir))
    task, service = sky_yaml("sky_task.yaml"), sky_yaml("sky_serve.yaml")
    assert task["envs"][f"{ENV_PREFIX}TRAINING__OUTPUT_DIR"] == in_bucket, f"sky_task.yaml: {in_bucket}"
    assert service["envs"][f"{ENV_PREFIX}SERVING__MODEL_DIR"] == in_bucket, f"sky_serve.yaml: {in_bucket}"
    for loaded in (task, service):
        assert str(MOUNT) in loaded["file_mounts"]
