"""Typed project settings: configs/settings.yaml < environment variables < command-line flags.

`load_settings()` is the one way in. A bad value anywhere is reported as one line naming the field path
(for example `training.num_train_epochs`) and the problem; `settings_or_exit()` turns that into exit code 2.
"""

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "{{ cookiecutter.package_name.upper() }}_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
DEFAULT_CONFIG = Path("configs/settings.yaml")
LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")


class SettingsError(Exception):
    """A settings problem, already phrased for a person: one line, naming the field or file."""


def is_local_reference(reference: str) -> bool:
    """A checkpoint or dataset is local when it exists on disk or is written as a path; otherwise a Hub id."""
    return reference.startswith(LOCAL_PATH_PREFIXES) or Path(reference).exists()


def _must_exist_if_local(reference: str) -> str:
    if is_local_reference(reference) and not Path(reference).expanduser().exists():
        raise ValueError(f"local path {reference} does not exist")
    return reference


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(Section):
    checkpoint: str = Field(min_length=1)
    max_length: int = Field(256, ge=8, le=8192)

    _checkpoint_exists = field_validator("checkpoint")(_must_exist_if_local)


class DataSettings(Section):
    dataset: str = Field(min_length=1)
    config_name: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    train_split: str = "train"
    eval_split: str | None = None
    eval_fraction: float = Field(0.1, gt=0, lt=1)
    max_train_samples: int | None = Field(1000, ge=1)
    max_eval_samples: int | None = Field(500, ge=1)
    label_names: list[str] | None = Field(None, min_length=2)

    _dataset_exists = field_validator("dataset")(_must_exist_if_local)


Strategy = Literal["no", "steps", "epoch"]


class TrainingSettings(Section):
    output_dir: Path = Path("models/sentiment")
    num_train_epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    per_device_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    eval_strategy: Strategy = "epoch"
    save_strategy: Strategy = "epoch"
    eval_steps: int = Field(100, ge=1)
    save_steps: int = Field(100, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    report_to: str = "none"
    seed: int = 42
    resume: bool = True


class ServingSettings(Section):
    model_dir: Path = Path("models/sentiment")
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = "127.0.0.1"  # noqa: S104 - the addresses LitServe accepts
    port: int = Field(8000, ge=1024, le=65535)  # LitServe refuses privileged ports
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch_size: int = Field(8, ge=1, le=1024)
    batch_timeout: float = Field(0.01, ge=0, le=10)
    max_texts_per_request: int = Field(32, ge=1, le=1024)
    workers_per_device: int | None = Field(None, ge=1, le=64)  # None: 1 on a GPU, one per core on a CPU (at most 4)
    cpu_threads: int | None = Field(None, ge=1, le=512)  # torch threads per CPU worker; None: (cores - 1) / workers


class ImageSettings(Section):
    registry: str = ""
    name: str = Field(min_length=1)
    tag: str = Field(min_length=1)

    @property
    def reference(self) -> str:
        """The full image reference `build-image` tags and the cloud task runs: registry/name:tag."""
        repository = f"{self.registry}/{self.name}" if self.registry else self.name
        return f"{repository}:{self.tag}"

    @property
    def cloud_reference(self) -> str:
        """The `cloud` stage's image (what SkyPilot runs): the runtime reference with a `-cloud` tag suffix."""
        return f"{self.reference}-cloud"


class CloudSettings(Section):
    cloud: Literal["gcp", "aws", "azure", "kubernetes"]
    region: str | None = None
    accelerators: str | None = None
    cpus: str = "4+"
    memory: str | None = "16+"
    disk_size: int = Field(100, ge=10)
    use_spot: bool = False
    num_nodes: int = Field(1, ge=1)
    idle_minutes_to_autostop: int | None = Field(30, ge=0)  # None: the cluster runs until `sky down`
    # A bucket name valid on GCS, S3 and Azure alike (most clouds make it globally unique: pick your own).
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_parse_none_str="null",
        extra="forbid",
    )

    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    serving: ServingSettings
    image: ImageSettings
    cloud: CloudSettings


def _settings_with_file(file_values: dict[str, Any]) -> type[Settings]:
    """Settings whose lowest-ranked source is the parsed YAML file."""

    class FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # First wins: command-line flags (passed as init values) > environment > the YAML file.
            return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=file_values)

    return FileSettings


def parse_flags(argv: Sequence[str]) -> tuple[Path | None, dict[str, Any]]:
    """`--config PATH` and `--section.field VALUE` (or `=VALUE`) flags → (config path, nested overrides)."""
    config: Path | None = None
    overrides: dict[str, Any] = {}
    args = list(argv)
    while args:
        flag = args.pop(0)
        if not flag.startswith("--") or len(flag) == 2:
            raise SettingsError(f"unexpected argument {flag!r}: settings flags look like --training.num_train_epochs 3")
        key, has_value, value = flag[2:].partition("=")
        if not has_value:
            if not args:
                raise SettingsError(f"flag --{key} needs a value")
            value = args.pop(0)
        if key == "config":
            config = Path(value)
            continue
        *sections, field = key.split(".")
        if not sections or not all(sections) or not field:
            raise SettingsError(f"flag --{key}: name a field as --section.field, e.g. --training.seed 7")
        target = overrides
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise SettingsError(f"flag --{key}: {section} is a value, not a section")
        target[field] = _flag_value(value)
    return config, overrides


def _flag_value(text: str) -> Any:
    """Flags are strings that pydantic converts; `null` means None and `[...]` is a JSON list."""
    if text == "null":
        return None
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise SettingsError(f"flag value {text!r} is not a JSON list: {error.msg}") from error
    return text


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        hint = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise SettingsError(f"settings file {path} not found{hint}; pass --config PATH or set {CONFIG_ENV}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise SettingsError(f"settings file {path}: malformed YAML{where}: {problem}") from error
    if not isinstance(values, dict):
        raise SettingsError(f"settings file {path}: expected a mapping of sections, got {type(values).__name__}")
    return values


def _describe(error: Mapping[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "settings"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown setting (check the spelling against configs/settings.yaml)"
    if error["type"] == "missing":
        return f"{field}: missing; every section of configs/settings.yaml is required"
    value = error.get("input")
    shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
    return f"{field}: {error['msg']}{shown}"


def load_settings(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the YAML file, the environment and `argv` flags; raises SettingsError."""
    environ = os.environ if environ is None else environ
    config, overrides = parse_flags(argv)
    path = config or Path(environ.get(CONFIG_ENV, DEFAULT_CONFIG))
    settings_class = _settings_with_file(_read_yaml(path))
    try:
        return settings_class(**overrides)
    except ValidationError as error:
        raise SettingsError("; ".join(_describe(e) for e in error.errors())) from None


def settings_or_exit(argv: Sequence[str] | None = None) -> Settings:
    """Settings for a command-line program: a settings problem is one line on stderr and exit code 2."""
    try:
        return load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Print the effective settings as YAML (`uv run show-settings [flags]`)."""
    settings = settings_or_exit()
    print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")


if __name__ == "__main__":
    main()
