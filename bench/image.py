"""Image benchmark: the generated project's `runtime` image against its floor and against LitServe's own recipe.

Measured on one machine, one engine, in one run:
  size      the runtime image vs its floor (the base image + the venv it must carry) and vs the single-stage image
            `litserve dockerize` writes for the same server and the same locked packages;
  rebuild   after a code-only change (one line in the package) vs a build without layer cache, for both recipes.
            Goal for the project's Dockerfile: a code-only rebuild takes at most 5 % of the cold build.

"Cold" is `docker build --no-cache`: no layer is reused, but the uv download cache (a BuildKit cache mount) stays
warm, as it does on a developer machine or a CI runner with a cache; pip in LitServe's recipe caches nothing.
`litserve dockerize` runs as installed in the project (offline); its Dockerfile is used as written, except that the
pip step trusts EXTRA_CA when that is set (the index is behind a TLS-intercepting proxy here), through the same kind
of BuildKit secret mount, and its `python:<ver>-slim` base is the same local image as the project's base.

Usage, from the template root, with a Docker engine whose client speaks BuildKit (`DOCKER`, else `docker`):
    uv run python bench/image.py                  # bake a 3.11 project into a temp folder, measure, clean up
    uv run python bench/image.py --project DIR    # an already baked project (its uv.lock is used)
    uv run python bench/image.py --skip-litserve  # only the project's own image
Results: printed, and written to bench/results/image.md.
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent
RESULTS = HERE / "results"
GOAL_REBUILD_FRACTION = 0.05
SERVER = """# What `litserve dockerize` expects: a server file in the build context. It starts the project's own server.
import sys

sys.path.insert(0, "/app/src")
from {package}.serve import main

main()
"""


def docker_client() -> str:
    found = os.environ.get("DOCKER") or shutil.which("docker")
    if not found:
        sys.exit("error: no docker client (set DOCKER or put docker on PATH)")
    if subprocess.run([found, "version"], capture_output=True).returncode != 0:
        sys.exit(f"error: the Docker daemon does not answer ({found} version failed)")
    return found


def docker_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def secret_flags() -> list[str]:
    extra_ca = os.environ.get("EXTRA_CA")
    return ["--secret", f"id=extra_ca,src={extra_ca}"] if extra_ca else []


def timed_build(docker: str, context: Path, args: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("a") as output:
        done = subprocess.run(
            [docker, "build", "--progress=plain", *args, *secret_flags(), "."],
            cwd=context,
            env=docker_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        sys.exit(f"error: docker build {' '.join(args)} failed; see {log}")
    return time.perf_counter() - started


def image_size(docker: str, image: str) -> int:
    done = subprocess.run([docker, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True)
    return int(done.stdout.strip())


def folder_size(docker: str, image: str, folder: str) -> int:
    command = [docker, "run", "--rm", "--entrypoint", "du", image, "-sb", folder]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[0])


def touch_code(project: Path, package: str) -> None:
    """A code-only change: one line in the package, nothing else."""
    with (project / "src" / package / "__init__.py").open("a") as init:
        init.write(f"# bench edit {uuid.uuid4().hex}\n")


def base_image(project: Path) -> str:
    """The Dockerfile's default BASE_IMAGE, rendered with its default PYTHON_VERSION."""
    args = {}
    for line in (project / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith("ARG ") and "=" in line:
            key, value = line[4:].split("=", 1)
            args[key] = value
    return args["BASE_IMAGE"].replace("${PYTHON_VERSION}", args["PYTHON_VERSION"])


def bake(workdir: Path) -> Path:
    from cookiecutter.main import cookiecutter  # the template's environment, not the project's

    extra = {"python_version": "3.11"}
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(workdir), extra_context=extra))


def measure_project(docker: str, project: Path, package: str, tag: str, log: Path) -> dict[str, float]:
    runtime = ["-f", "docker/Dockerfile", "--target", "runtime", "-t", tag]
    cold = timed_build(docker, project, ["--no-cache", *runtime], log)
    warm = timed_build(docker, project, runtime, log)
    touch_code(project, package)
    code_only = timed_build(docker, project, runtime, log)
    size = image_size(docker, tag)
    base = image_size(docker, base_image(project))
    venv = folder_size(docker, tag, "/opt/venv")
    return {"cold_s": cold, "warm_s": warm, "code_only_s": code_only, "size": size, "base": base, "venv": venv}


def litserve_context(project: Path, package: str, workdir: Path, litserve: Path) -> Path:
    """A build context laid out the way `litserve dockerize` expects: server file + requirements.txt + the code."""
    context = workdir / "litserve-context"
    context.mkdir()
    for name in ("src", "configs"):
        shutil.copytree(project / name, context / name)
    (context / "server.py").write_text(SERVER.format(package=package))
    uv = shutil.which("uv") or sys.exit("error: uv is not on PATH")
    requirements = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--format", "requirements-txt"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (context / "requirements.txt").write_text(requirements)
    subprocess.run(
        [str(litserve), "dockerize", "server.py", "--port", "8000"], cwd=context, check=True, capture_output=True
    )
    dockerfile = context / "Dockerfile"
    written = dockerfile.read_text()
    (workdir / "litserve.Dockerfile.orig").write_text(written)
    if os.environ.get("EXTRA_CA"):
        pip = "RUN pip install --no-cache-dir"
        assert pip in written, "litserve dockerize changed its template"
        trusted = (
            "RUN --mount=type=secret,id=extra_ca,required=false "
            "cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca >/dev/shm/ca.pem "
            "&& PIP_CERT=/dev/shm/ca.pem pip install --no-cache-dir"
        )
        dockerfile.write_text(written.replace(pip, trusted))
    return context


def measure_litserve(
    docker: str, project: Path, package: str, tag: str, workdir: Path, log: Path, litserve: Path
) -> dict[str, float]:
    context = litserve_context(project, package, workdir, litserve)
    python = base_image(project).split(":")[1].split("-")[0]  # e.g. 3.11
    slim = f"python:{python}-slim"
    aliased = subprocess.run([docker, "image", "inspect", slim], capture_output=True).returncode != 0
    if aliased:  # its FROM python:<ver>-slim: the same local base image as the project's, under that name
        subprocess.run([docker, "tag", base_image(project), slim], check=True)
    try:
        args = ["--build-arg", f"PYTHON_VERSION={python}", "-t", tag]
        cold = timed_build(docker, context, ["--no-cache", *args], log)
        touch_code(context, package)
        code_only = timed_build(docker, context, args, log)
        return {"cold_s": cold, "code_only_s": code_only, "size": image_size(docker, tag)}
    finally:
        if aliased:
            subprocess.run([docker, "image", "rm", slim], capture_output=True)


def gb(size: float) -> str:
    return f"{size / 1e9:.2f} GB"


def report(project: dict[str, float], litserve: dict[str, float] | None, docker: str) -> str:
    floor = project["base"] + project["venv"]
    fraction = project["code_only_s"] / project["cold_s"]
    server = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True)
    lines = [
        f"# Image benchmark ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; Docker engine {server.stdout.strip()}; "
        "cold = `--no-cache` with a warm uv download cache (pip caches nothing).",
        "",
        "| image | size | vs floor | cold build | no-change rebuild | code-only rebuild | code-only / cold |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| floor: base image + /opt/venv | {gb(floor)} | 1.00 | | | | |",
        f"| project `runtime` stage | {gb(project['size'])} | {project['size'] / floor:.3f} "
        f"| {project['cold_s']:.1f} s | {project['warm_s']:.1f} s | {project['code_only_s']:.1f} s | {fraction:.1%} |",
    ]
    if litserve:
        ls_fraction = litserve["code_only_s"] / litserve["cold_s"]
        lines.append(
            f"| `litserve dockerize` (single stage) | {gb(litserve['size'])} | {litserve['size'] / floor:.3f} "
            f"| {litserve['cold_s']:.1f} s | | {litserve['code_only_s']:.1f} s | {ls_fraction:.1%} |"
        )
    lines += [
        "",
        f"Base image {gb(project['base'])}, venv {gb(project['venv'])}. Goal: code-only rebuild <= "
        f"{GOAL_REBUILD_FRACTION:.0%} of cold: {'met' if fraction <= GOAL_REBUILD_FRACTION else 'NOT met'} "
        f"({fraction:.1%}).",
    ]
    if litserve:
        lines.append(
            f"Project runtime vs `litserve dockerize`: size {project['size'] / litserve['size']:.2f}x, "
            f"code-only rebuild {project['code_only_s'] / litserve['code_only_s']:.3f}x."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", help="an already baked project (default: bake one into a temp folder)")
    parser.add_argument("--skip-litserve", action="store_true", help="measure only the project's own image")
    options = parser.parse_args()
    docker = docker_client()
    workdir = Path(tempfile.mkdtemp(prefix="bench-image-"))
    source = Path(options.project).resolve() if options.project else bake(workdir / "baked")
    if not (source / ".venv").exists():
        subprocess.run([shutil.which("uv") or "uv", "sync", "-q", "--locked"], cwd=source, check=True)
    litserve = source / ".venv" / "bin" / "litserve"
    # The code edits go to a copy: a project given with --project stays as it is.
    project = workdir / "project"
    shutil.copytree(source, project, ignore=shutil.ignore_patterns(".venv", "models", "data", ".git"))
    package = next(path.name for path in (project / "src").iterdir() if path.is_dir())
    run = uuid.uuid4().hex[:8]
    ours, theirs = f"bench-image-{run}:runtime", f"bench-image-{run}:litserve"
    log = workdir / "build.log"
    print(f"building; log: {log}", file=sys.stderr)
    try:
        measured = measure_project(docker, project, package, ours, log)
        print(json.dumps({"project": measured}), file=sys.stderr)
        litserve_figures = (
            None
            if options.skip_litserve
            else measure_litserve(docker, project, package, theirs, workdir, log, litserve)
        )
    finally:
        subprocess.run([docker, "image", "rm", "--force", ours, theirs], capture_output=True)
    text = report(measured, litserve_figures, docker)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "image.md").write_text(text)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
