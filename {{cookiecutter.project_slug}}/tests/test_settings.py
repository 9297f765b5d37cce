"""Settings: YAML < environment < flags, and every bad value is one line naming the field, with exit code 2."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package_name }}.settings import DEFAULT_CONFIG, ENV_PREFIX, SettingsError, load_settings

from tests.conftest import BIN, PROJECT, offline_env, run

SETTINGS_FILE = PROJECT / DEFAULT_CONFIG


def settings_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return str(path)


def without_section(section: str) -> str:
    values = yaml.safe_load(SETTINGS_FILE.read_text())
    del values[section]
    return yaml.safe_dump(values)


def with_extra_key(section: str, key: str) -> str:
    values = yaml.safe_load(SETTINGS_FILE.read_text())
    values[section][key] = 1
    return yaml.safe_dump(values)


def test_yaml_is_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)
    expected = yaml.safe_load(SETTINGS_FILE.read_text())
    settings = load_settings([], environ={})
    assert settings.model.checkpoint == expected["model"]["checkpoint"]
    assert settings.training.num_train_epochs == expected["training"]["num_train_epochs"]
    assert settings.serving.port == expected["serving"]["port"]


def test_environment_beats_yaml_and_flags_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)
    monkeypatch.setenv(f"{ENV_PREFIX}TRAINING__NUM_TRAIN_EPOCHS", "3")
    monkeypatch.setenv(f"{ENV_PREFIX}TRAINING__SEED", "11")
    settings = load_settings(["--training.seed", "12"])
    assert settings.training.num_train_epochs == 3
    assert settings.training.seed == 12


def test_flags_take_equals_null_and_json_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)
    settings = load_settings(
        ["--data.max_train_samples=null", "--data.label_names", '["neg", "pos"]', "--serving.port=9001"], environ={}
    )
    assert settings.data.max_train_samples is None
    assert settings.data.label_names == ["neg", "pos"]
    assert settings.serving.port == 9001


def test_another_file_by_flag_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = yaml.safe_load(SETTINGS_FILE.read_text())
    values["training"]["learning_rate"] = 0.001
    other = settings_file(tmp_path, yaml.safe_dump(values))
    monkeypatch.chdir(tmp_path)  # the default file is not here: only the chosen one can be read
    assert load_settings(["--config", other], environ={}).training.learning_rate == 0.001
    assert load_settings([], environ={f"{ENV_PREFIX}CONFIG": other}).training.learning_rate == 0.001


def test_image_reference_joins_registry_name_and_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)
    image = load_settings(["--image.registry", "ghcr.io/acme", "--image.tag", "2.0"], environ={}).image
    assert image.reference == f"ghcr.io/acme/{image.name}:2.0"
    local = load_settings(["--image.registry", ""], environ={}).image
    assert local.reference == f"{local.name}:{local.tag}"


def test_errors_name_the_field() -> None:
    with pytest.raises(SettingsError, match=r"^training\.per_device_batch_size: Input should be greater than"):
        load_settings(["--config", str(SETTINGS_FILE), "--training.per_device_batch_size", "0"], environ={})


# (flags, environment, file contents or None, text the one error line must contain)
BAD_SETTINGS = {
    "env-wrong-type": ([], {"TRAINING__NUM_TRAIN_EPOCHS": "abc"}, None, "training.num_train_epochs: Input should be"),
    "flag-out-of-range": (["--training.learning_rate", "5"], {}, None, "training.learning_rate: Input should be less"),
    "flag-zero-batch": (["--training.per_device_batch_size", "0"], {}, None, "training.per_device_batch_size"),
    "env-port-out-of-range": ([], {"SERVING__PORT": "70000"}, None, "serving.port: Input should be less than"),
    "flag-bad-choice": (["--training.mixed_precision", "fp8"], {}, None, "training.mixed_precision: Input should be"),
    "flag-bad-bool": (["--training.resume", "maybe"], {}, None, "training.resume: Input should be a valid boolean"),
    "flag-unknown-key": (["--training.epochs", "3"], {}, None, "training.epochs: unknown setting"),
    "flag-unknown-section": (["--optimizer.name", "adam"], {}, None, "optimizer: unknown setting"),
    "env-unknown-key": ([], {"TRAINING__EPOCHS": "3"}, None, "training.epochs: unknown setting"),
    "yaml-unknown-key": ([], {}, with_extra_key("data", "text_col"), "data.text_col: unknown setting"),
    "yaml-missing-section": ([], {}, without_section("serving"), "serving: missing"),
    "yaml-malformed": ([], {}, "model: [checkpoint\n", "malformed YAML at line"),
    "yaml-not-a-mapping": ([], {}, "- just\n- a list\n", "expected a mapping of sections, got list"),
    "missing-file-flag": (["--config", "nowhere.yaml"], {}, None, "settings file nowhere.yaml not found"),
    "missing-file-env": ([], {"CONFIG": "/nowhere/settings.yaml"}, None, "settings file /nowhere/settings.yaml"),
    "seed-beyond-numpy": (["--training.seed", str(2**32)], {}, None, "training.seed: Input should be less than"),
    "negative-seed": (["--training.seed", "-1"], {}, None, "training.seed: Input should be greater than"),
    "infinite-epochs": (["--training.num_train_epochs", "inf"], {}, None, "training.num_train_epochs: Input should"),
    "nan-learning-rate": ([], {"TRAINING__LEARNING_RATE": "nan"}, None, "training.learning_rate: Input should be"),
    "unknown-tracker": (["--training.report_to", "tensorbored"], {}, None, "training.report_to: Input should be"),
    "huge-batch-timeout": (["--serving.batch_timeout", "1e9"], {}, None, "serving.batch_timeout: Input should be"),
    "positional-argument": (["epochs=3"], {}, None, "unexpected argument 'epochs=3'"),
    "flag-without-value": (["--training.seed"], {}, None, "flag --training.seed needs a value"),
    "flag-without-section": (["--seed", "3"], {}, None, "name a field as --section.field"),
    "empty-output-dir": (["--training.output_dir", ""], {}, None, "training.output_dir: . is the working directory"),
    "output-dir-above": ([], {"TRAINING__OUTPUT_DIR": ".."}, None, "training.output_dir: .. is the working directory"),
    "env-section-not-json": ([], {"TRAINING": "notjson"}, None, 'error parsing value for field "training"'),
    "env-unknown-section": ([], {"TRAINNG__EPOCHS": "3"}, None, "_TRAINNG__EPOCHS: no section 'trainng' (sections: "),
}


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_bad_setting_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    flags, environment, contents, expected = BAD_SETTINGS[case]
    if contents is not None:
        flags = ["--config", settings_file(tmp_path, contents), *flags]
    done = run("show-settings", *flags, env={ENV_PREFIX + key: value for key, value in environment.items()})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert done.stdout == ""


def test_paths_starting_with_a_tilde_are_in_the_home_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)
    settings = load_settings(["--training.output_dir", "~/models/a", "--serving.model_dir", "~/models/b"], environ={})
    assert settings.training.output_dir == Path.home() / "models" / "a"
    assert settings.serving.model_dir == Path.home() / "models" / "b"


@pytest.mark.parametrize("command", [["show-settings"], ["show-settings", "--help"], ["train-cloud", "--help"]])
def test_a_reader_that_closed_the_pipe_ends_the_command_quietly(command: list[str]) -> None:
    """`uv run show-settings | head -1`: the reader may be gone before the command prints."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [str(BIN / command[0]), *command[1:]], cwd=PROJECT, env=offline_env(), stdout=write_end,
            stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""


def test_local_paths_are_checked_by_the_command_that_reads_them() -> None:
    """Settings load wherever the training inputs are absent (e.g. the serving image); training checks them."""
    done = run("show-settings", "--model.checkpoint", "/no/such/model", "--data.dataset", "./no-such-data.csv")
    assert done.returncode == 0, done.stderr
    assert "checkpoint: /no/such/model" in done.stdout


# Each command that takes settings flags, and sections its --help must list (beside those of the other commands).
HELP = {
    "train-local": ("model", "data", "training"),
    "serve": ("serving", "model"),
    "build-image": ("image",),
    "serve-image": ("serving", "image"),
    "train-cloud": ("model", "data", "training", "serving", "image"),
    "serve-cloud": ("model", "data", "training", "serving", "image"),
    "show-settings": ("model", "data", "training", "serving", "image"),
}


@pytest.mark.parametrize("command", HELP)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_each_setting_with_type_current_value_and_meaning(command: str, flag: str) -> None:
    """The current value is what the command would use: the file, then the environment, then the flags given."""
    sections = HELP[command]
    env = {f"{ENV_PREFIX}SERVING__PORT": "9123"}
    done = run(command, "--image.tag", "9.9.9", flag, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    values = yaml.safe_load(SETTINGS_FILE.read_text())
    for section in sections:
        for field in values[section]:
            line = next((line for line in done.stdout.splitlines() if line.startswith(f"  --{section}.{field} ")), "")
            assert "[now: " in line, f"--{section}.{field} missing from {command} {flag}"
            description = done.stdout.splitlines()[done.stdout.splitlines().index(line) + 1]
            assert description.strip(), f"--{section}.{field} has no description"
    if "serving" in sections:
        assert "  --serving.port INT  [now: 9123]" in done.stdout  # the environment applies
        assert "--training.learning_rate" not in done.stdout or "training" in sections
    if "image" in sections:
        assert "  --image.tag TEXT  [now: 9.9.9]" in done.stdout  # so do the flags
    if "training" in sections:
        assert "  --training.mixed_precision auto|no|fp16|bf16  [now: auto]" in done.stdout
        assert "  --training.save_total_limit INT | null  [now: 2]" in done.stdout


def test_help_still_answers_when_the_settings_do_not_load() -> None:
    done = run("train-local", "--training.seed", "oops", "--help")
    assert done.returncode == 0, done.stderr
    assert "The current settings do not load (training.seed: Input should be a valid integer" in " ".join(
        done.stdout.split()
    )
    assert "  --training.seed INT  [now: 42]" in done.stdout
