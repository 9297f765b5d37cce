"""Typed project settings: configs/settings.yaml < environment variables < command-line flags.

`load_settings()` is the one way in. A bad value anywhere is reported as one line naming the field path
(for example `training.num_train_epochs`) and the problem; `settings_or_exit()` turns that into exit code 2, and
answers `--help` with every setting, its type, its current value and what it does.
"""

import importlib.util
import json
import os
import sys
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "{{ cookiecutter.package_name.upper() }}_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
DEFAULT_CONFIG = Path("configs/settings.yaml")
LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")
HELP_FLAGS = ("-h", "--help")
SEED_MAX = 2**32 - 1  # numpy's seeds
# The packages behind each training.report_to choice (any one of them is enough for the Trainer).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


class SettingsError(Exception):
    """A settings problem, already phrased for a person: one line, naming the field or file."""


def first_line(error: Exception) -> str:
    """An exception's message cut to its first line (libraries' messages run on)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def print_out(text: str, end: str = "\n") -> None:
    """Print to stdout; a reader that stops early (`--help | head -3`) ends the program quietly, exit code 1."""
    try:
        print(text, end=end, flush=True)
    except BrokenPipeError:
        # Python would hit the closed pipe again when it flushes stdout at exit, and report it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


def own_folder(path: Path) -> Path:
    """A folder the program writes into, `~` expanded; never the working directory or one above it."""
    path = path.expanduser()
    if path.resolve() in (Path.cwd(), *Path.cwd().parents):
        raise ValueError(f"{path} is the working directory or above it; the model's files need a folder of their own")
    return path


# Paths are expanded like a shell would (`~/models`); `OwnFolder`: a folder the program writes into.
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]
OwnFolder = Annotated[Path, AfterValidator(own_folder)]


def is_local_reference(reference: str) -> bool:
    """A checkpoint or dataset is local when it exists on disk or is written as a path; otherwise a Hub id."""
    return reference.startswith(LOCAL_PATH_PREFIXES) or Path(reference).exists()


class Section(BaseModel):
    # Infinite or NaN numbers are refused everywhere: the libraries would fail on them later, mid-run.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSettings(Section):
    checkpoint: str = Field(min_length=1, description="Hugging Face Hub id or local folder of the model to fine-tune")
    max_length: int = Field(256, ge=8, le=8192, description="tokens per text; longer texts are truncated")


class DataSettings(Section):
    dataset: str = Field(
        min_length=1,
        description="Hub id, or a local CSV/JSON/JSONL/Parquet file, a folder of them (train.csv, test.csv), "
        "or a save_to_disk folder",
    )
    config_name: str | None = Field(None, description="the Hub dataset's configuration, if it has several")
    text_column: str = Field("text", min_length=1, description="column holding the texts")
    label_column: str = Field("label", min_length=1, description="column holding the labels (ids or names)")
    train_split: str = Field("train", min_length=1, description="split to train on")
    eval_split: str | None = Field(
        None, description='split to evaluate on; null: "test" or "validation" if present, else eval_fraction of train'
    )
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="share of train held out when there is no eval split")
    max_train_samples: int | None = Field(1000, ge=1, description="train on a seeded subset this large; null: all")
    max_eval_samples: int | None = Field(500, ge=1, description="evaluate on a seeded subset this large; null: all")
    label_names: list[str] | None = Field(
        None, min_length=2, description="class names in id order; null: from the dataset"
    )


Strategy = Literal["no", "steps", "epoch"]


class TrainingSettings(Section):
    output_dir: OwnFolder = Field(
        Path("models/sentiment"),
        description="final model, metrics.json and curves.png; Trainer checkpoints in its checkpoints/ folder",
    )
    num_train_epochs: float = Field(1.0, gt=0, le=10_000, description="passes over the training set")
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="peak learning rate of AdamW")
    per_device_batch_size: int = Field(16, ge=1, le=65_536, description="texts per step on each device")
    gradient_accumulation_steps: int = Field(1, ge=1, le=65_536, description="steps per optimizer update")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the steps spent warming up the learning rate")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay")
    eval_strategy: Strategy = Field("epoch", description="when to evaluate")
    save_strategy: Strategy = Field("epoch", description="when to save a checkpoint")
    eval_steps: int = Field(100, ge=1, description='steps between evaluations when eval_strategy is "steps"')
    save_steps: int = Field(100, ge=1, description='steps between checkpoints when save_strategy is "steps"')
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept (oldest deleted first); null: all")
    logging_steps: int = Field(10, ge=1, description="steps between loss logs and progress-bar updates")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 or fp16 on a capable GPU, fp32 on a CPU"
    )
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = Field(
        "none",
        description="experiment tracker the Trainer logs to (the `tracking` extra): TensorBoard files under "
        "output_dir/runs, MLflow at MLFLOW_TRACKING_URI, W&B (WANDB_API_KEY or WANDB_MODE=offline)",
    )
    seed: int = Field(42, ge=0, le=SEED_MAX, description="seed for weights, shuffling and the eval split")
    resume: bool = Field(True, description="continue an unfinished run with the same settings from its last checkpoint")
    load_best_model_at_end: bool = Field(
        False, description="keep the best checkpoint by metric_for_best_model (needs equal eval and save strategies)"
    )
    metric_for_best_model: Literal["loss", "accuracy", "f1_macro"] = Field(
        "loss", description="the eval metric that picks the best checkpoint (loss: lower is better)"
    )
    push_to_hub: bool = Field(
        False, description="push the final model and its card to the Hugging Face Hub (token: HF_TOKEN)"
    )
    hub_model_id: str | None = Field(
        None, min_length=1, description="Hub repository, e.g. your-user/sentiment; null: output_dir's folder name"
    )

    @model_validator(mode="after")
    def _best_model_needs_matching_strategies(self) -> "TrainingSettings":
        # The Trainer can only keep the best checkpoint when every evaluation has a checkpoint to go with it.
        if not self.load_best_model_at_end:
            return self
        if self.eval_strategy == "no" or self.eval_strategy != self.save_strategy:
            raise ValueError(
                "load_best_model_at_end needs eval_strategy and save_strategy equal and not no "
                f"(got {self.eval_strategy} and {self.save_strategy})"
            )
        if self.eval_strategy == "steps" and self.save_steps % self.eval_steps:
            raise ValueError(
                f"load_best_model_at_end needs save_steps ({self.save_steps}) to be a multiple of eval_steps "
                f"({self.eval_steps})"
            )
        return self


Precision = Literal["auto", "fp32", "int8", "bf16", "fp16"]  # serving.precision; predictor.py applies it


class ServingSettings(Section):
    model_dir: UserPath = Field(Path("models/sentiment"), description="a model folder written by train-local")
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = Field(  # noqa: S104 - the addresses LitServe accepts
        "127.0.0.1", description="address to listen on; the image sets 0.0.0.0"
    )
    port: int = Field(8000, ge=1024, le=65535, description="port to listen on")  # LitServe refuses privileged ports
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a GPU when one is visible")
    max_batch_size: int = Field(8, ge=1, le=1024, description="requests gathered into one forward pass")
    batch_timeout: float = Field(
        0.002, ge=0, le=10, description="seconds to wait for a batch to fill; under load, requests queue up anyway"
    )
    max_texts_per_request: int = Field(32, ge=1, le=1024, description='most texts one "texts" request may carry')
    workers_per_device: int | None = Field(
        None, ge=1, le=64, description="inference processes per device; null: 1 per GPU, 1 per core on a CPU (≤ 4)"
    )
    cpu_threads: int | None = Field(
        None, ge=1, le=512, description="torch threads per CPU worker; null: (cores - 1) / workers, at least 1"
    )
    precision: Precision = Field(
        "auto", description="auto: bf16 or fp16 on a GPU, fp32 on a CPU; int8 (dynamic quantization): CPU only"
    )


class ImageSettings(Section):
    registry: str = Field("", description="registry and owner the image is tagged for, e.g. ghcr.io/acme")
    name: str = Field(min_length=1, description="image name")
    tag: str = Field(min_length=1, description="image tag; the cloud image adds -cloud")

    @property
    def reference(self) -> str:
        """The full image reference `build-image` tags and the cloud task runs: registry/name:tag."""
        repository = f"{self.registry}/{self.name}" if self.registry else self.name
        return f"{repository}:{self.tag}"

    @property
    def cloud_reference(self) -> str:
        """The `cloud` stage's image (what SkyPilot runs): the runtime reference with a `-cloud` tag suffix."""
        return f"{self.reference}-cloud"


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


SECTIONS = tuple(Settings.model_fields)


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
            raise SettingsError(f"unexpected argument {flag!r}: settings flags look like --section.field VALUE")
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
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"settings file {path}: unreadable ({error})") from error
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
    shown = "" if isinstance(value, dict | list) or value is None else f" (got {str(value)[:80]!r})"
    return f"{field}: {error['msg'].removeprefix('Value error, ')}{shown}"


def check_variable_sections(environ: Mapping[str, str]) -> None:
    """Every variable with the settings' prefix names a section (or the settings file): pydantic-settings reads only
    the names it expects, so a misspelt section would be ignored without a word. Raises SettingsError."""
    known = {CONFIG_ENV, *(f"{ENV_PREFIX}{section}".upper() for section in SECTIONS)}
    for name in sorted(environ):
        section = name.upper().split("__", 1)[0]
        if section.startswith(ENV_PREFIX) and section not in known:
            shown = ", ".join(SECTIONS)
            raise SettingsError(f"{name}: no section {section.removeprefix(ENV_PREFIX).lower()!r} (sections: {shown})")


def load_settings(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the YAML file, the environment and `argv` flags; raises SettingsError."""
    environ = os.environ if environ is None else environ
    check_variable_sections(environ)
    config, overrides = parse_flags(argv)
    path = config or Path(environ.get(CONFIG_ENV, DEFAULT_CONFIG))
    settings_class = _settings_with_file(_read_yaml(path))
    try:
        return settings_class(**overrides)
    except ValidationError as error:
        raise SettingsError("; ".join(_describe(e) for e in error.errors())) from None
    except SourceError as error:  # a whole section's variable (PREFIX_TRAINING) that is not JSON
        raise SettingsError(f"{first_line(error)}: set {ENV_PREFIX}SECTION__FIELD variables instead") from None


def type_name(annotation: Any) -> str:
    """A field's type as --help shows it: INT, FLOAT, TEXT, PATH, true|false, a|b|c, LIST; `| null` when optional."""
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        shown = [type_name(argument) for argument in arguments if argument is not type(None)]
        return " | ".join([*shown, "null"])
    if typing.get_origin(annotation) is Literal:
        return "|".join(str(argument) for argument in arguments)
    if typing.get_origin(annotation) is list:
        return "JSON-LIST"
    names = {int: "INT", float: "FLOAT", str: "TEXT", bool: "true|false", Path: "PATH"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)).upper())


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def command_name() -> str:
    """How this program was started: `uv run train-local` (a console script), or `python -m package.module`."""
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    return f"python -m {main_spec.name}" if main_spec else f"uv run {Path(sys.argv[0]).name}"


def help_text(about: str, sections: Sequence[str], argv: Sequence[str]) -> str:
    """Every setting of `sections`: flag, type, the value this command would use now, and what it does."""
    flags = [arg for arg in argv if arg not in HELP_FLAGS]
    try:
        current: dict[str, Any] | None = load_settings(flags).model_dump()
        note = "Current values come from the settings file, the environment and the flags given."
    except SettingsError as error:
        current, note = None, f"The current settings do not load ({error}); defaults are shown."
    sources = (
        f"Settings: {DEFAULT_CONFIG} (or --config PATH, or {CONFIG_ENV}) < environment ({ENV_PREFIX}SECTION__FIELD) "
        f"< flags. `null` means none; lists are JSON. {note}"
    )
    lines = [
        f"usage: {command_name()} [--section.field VALUE ...] [--config PATH]",
        "",
        about,
        "",
        *textwrap.wrap(sources, width=116),
    ]
    for section in sections:
        model = typing.cast("type[Section]", Settings.model_fields[section].annotation)
        lines += ["", f"{section}:"]
        for name, field in model.model_fields.items():
            if current is not None:
                value = _shown(current[section][name])
            else:
                value = "(required)" if field.is_required() else _shown(field.get_default(call_default_factory=True))
            lines.append(f"  --{section}.{name} {type_name(field.annotation)}  [now: {value}]")
            lines.append(f"      {field.description}")
    return "\n".join(lines)


def tracker_installed(tracker: str) -> bool:
    """Whether the Python running this can import the `training.report_to` tracker ("none" always can)."""
    return tracker == "none" or any(importlib.util.find_spec(name) for name in TRACKER_PACKAGES[tracker])


def settings_or_exit(
    argv: Sequence[str] | None = None, *, about: str = "", sections: Sequence[str] = SECTIONS
) -> Settings:
    """Settings for a command-line program: `--help` prints the settings of `sections` and exits 0; a settings
    problem is one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(arg in HELP_FLAGS for arg in args):
        print_out(help_text(about, sections, args))
        raise SystemExit(0)
    try:
        return load_settings(args)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Print the effective settings as YAML (`uv run show-settings [flags]`)."""
    settings = settings_or_exit(about="Print the settings every command would use, after the environment and flags.")
    print_out(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False, allow_unicode=True), end="")


if __name__ == "__main__":
    main()
