"""`train-local` end to end on a tiny DistilBERT and a small review set, offline."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import mlflow
import pytest
import torch
from huggingface_hub import ModelCard
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from {{ cookiecutter.package_name }} import checkpoints, lifetime
from {{ cookiecutter.package_name }}.data import cannot_load
from {{ cookiecutter.package_name }}.finetune import PreflightError, preflight, train, training_arguments
from {{ cookiecutter.package_name }}.settings import SettingsError, load_settings

from tests.conftest import (
    PROJECT,
    ctrl_c_while_starting,
    run,
    send_and_wait,
    start_in_own_group,
    train_flags,
    uv_run,
)
from tests.tiny import build_diverging_classifier, build_tiny_classifier, reviews, write_csv

pytestmark = pytest.mark.slow


def train_ok(*flags: str) -> subprocess.CompletedProcess[str]:
    done = run("train-local", *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def strict_json(path: Path) -> Any:
    """JSON as the standard has it: NaN and Infinity are not numbers there."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def evaluations(model_dir: Path) -> list[dict[str, Any]]:
    """The evaluation entries of a finished run's log_history.json, in order."""
    return [entry for entry in strict_json(model_dir / "log_history.json") if "eval_loss" in entry]


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of a failed command; no traceback on either stream."""
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def test_train_local_writes_a_servable_model(trained_model: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json", "curves.png"):
        assert (trained_model / name).is_file(), name
        assert (trained_model / name).stat().st_mode & 0o044 == 0o044, f"{name} must be readable by the image's user"
    metrics = strict_json(trained_model / "metrics.json")
    assert metrics["accuracy"] >= 0.9  # the words decide the label: a working fine-tune learns them
    # One evaluation per epoch: the final metrics are the last epoch's, not a second pass over the same model.
    per_epoch = evaluations(trained_model)
    assert [entry["epoch"] for entry in per_epoch] == [1.0, 2.0]
    assert per_epoch[-1]["eval_accuracy"] == metrics["accuracy"]
    assert per_epoch[-1]["step"] == metrics["global_step"]
    assert 0 <= metrics["f1_macro"] <= 1
    assert metrics["label_names"] == ["0", "1"]
    assert (metrics["train_samples"], metrics["eval_samples"]) == (200, 40)
    model = AutoModelForSequenceClassification.from_pretrained(trained_model)
    tokenizer = AutoTokenizer.from_pretrained(trained_model)
    assert model.config.id2label == {0: "0", 1: "1"}
    logits = model(**tokenizer(["the film was superb and the cast felt brilliant"], return_tensors="pt")).logits
    assert int(logits.argmax()) == 1


def test_a_model_card_and_tensorboard_curves_sit_beside_the_model(trained_model: Path, tiny_checkpoint: Path) -> None:
    """The shared model was trained with report_to tensorboard (conftest.trained_model)."""
    metrics = strict_json(trained_model / "metrics.json")
    card = ModelCard.load(trained_model / "README.md")
    assert f"- Accuracy: {round(metrics['accuracy'], 4)}" in card.text
    # A local base model, by its folder name: no Hub link, no base_model entry (the Hub takes only a Hub id there).
    assert f"fine-tuned version of the local checkpoint `{tiny_checkpoint.name}` on " in card.text
    assert "huggingface.co" not in card.text
    assert "base_model" not in card.data.to_dict()
    assert "- learning_rate: 0.005" in card.text
    assert "Labels, in class-index order: `0`, `1`." in card.text
    events = EventAccumulator(str(trained_model / "runs"))
    events.Reload()
    assert {"train/loss", "eval/accuracy"} <= set(events.Tags()["scalars"])
    assert events.Scalars("eval/accuracy")[-1].value == pytest.approx(metrics["accuracy"])


def test_report_to_mlflow_logs_the_run_to_the_tracking_uri(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = train_flags(tiny_checkpoint, review_data, tmp_path / "model", "--training.num_train_epochs", "1")
    done = run("train-local", *flags, "--training.report_to", "mlflow", env={"MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    (logged,) = client.search_runs(experiment_ids=experiments)
    metrics = strict_json(tmp_path / "model" / "metrics.json")
    assert logged.data.metrics["eval_accuracy"] == pytest.approx(metrics["accuracy"])
    assert logged.data.params["learning_rate"] == "0.005"


def test_report_to_wandb_writes_an_offline_run(tiny_checkpoint: Path, review_data: Path, tmp_path: Path) -> None:
    flags = train_flags(tiny_checkpoint, review_data, tmp_path / "model", "--training.num_train_epochs", "1")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "tests", "WANDB_SILENT": "true"}
    done = run("train-local", *flags, "--training.report_to", "wandb", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert run_file.stat().st_size > 0


def test_keeping_the_best_checkpoint_needs_matching_strategies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)
    best = ["--training.load_best_model_at_end", "true", "--training.metric_for_best_model", "accuracy"]
    args = training_arguments(load_settings(best, environ={}).training)
    assert (args.load_best_model_at_end, args.metric_for_best_model, args.greater_is_better) == (True, "accuracy", True)
    with pytest.raises(SettingsError, match=r"^training: load_best_model_at_end needs eval_strategy and save_strategy"):
        load_settings([*best, "--training.save_strategy", "no"], environ={})


def test_same_seed_same_metrics_and_a_rerun_with_new_settings_trains_afresh(
    trained_model: Path, tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    train_ok(*train_flags(tiny_checkpoint, review_data, tmp_path))
    first = json.loads((trained_model / "metrics.json").read_text())
    second = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("loss", "accuracy", "f1_macro", "train_loss", "global_step"):
        assert first[key] == second[key], key

    # The run finished: the same folder with another learning rate trains again from the checkpoint's weights.
    rerun = train_ok(*train_flags(tiny_checkpoint, review_data, tmp_path, "--training.learning_rate", "0.002"))
    third = json.loads((tmp_path / "metrics.json").read_text())
    assert "finished: training afresh" in rerun.stderr
    assert third["resumed_from_step"] == 0
    assert third["global_step"] == second["global_step"]
    assert 0 < third["train_loss"] != second["train_loss"]


def test_the_same_seed_draws_the_same_new_classification_head(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint without a classification head, as distilbert-base-uncased is: the head the run adds is drawn from
    the seed, so two runs with the same settings end with the same metrics."""
    headless = tmp_path / "headless"
    AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).base_model.save_pretrained(headless)
    AutoTokenizer.from_pretrained(tiny_checkpoint).save_pretrained(headless)
    monkeypatch.chdir(PROJECT)
    first, second = (
        train(load_settings(train_flags(headless, review_data, tmp_path / run), environ={})) for run in ("a", "b")
    )
    for key in ("loss", "accuracy", "train_loss"):
        assert first[key] == second[key], key


def test_a_diverging_run_stops_in_one_line_and_keeps_the_previous_model(
    trained_model: Path, review_data: Path, tmp_path: Path
) -> None:
    output = tmp_path / "model"
    shutil.copytree(trained_model, output)
    before = {name: (output / name).read_bytes() for name in ("model.safetensors", "metrics.json")}
    diverging = build_diverging_classifier(tmp_path / "nan-checkpoint")
    line = one_error_line(run("train-local", *train_flags(diverging, review_data, output)))
    assert line.startswith("error: training diverged (loss became nan at step "), line
    assert "--training.resume false" in line
    assert {name: (output / name).read_bytes() for name in before} == before  # the finished model is untouched


def resume_flags(checkpoint: Path, data: Path, output: Path, *extra: str) -> list[str]:
    """20 epochs of 13 steps (200 rows, batch 16), a checkpoint every 4 steps and only the last one kept: long enough
    that a run killed at its second checkpoint cannot finish first, whatever the machine's speed."""
    return train_flags(
        checkpoint, data, output,
        "--training.num_train_epochs", "20", "--training.save_strategy", "steps", "--training.save_steps", "4",
        "--training.save_total_limit", "1", "--training.eval_strategy", "no", *extra,
    )  # fmt: skip


def newest_complete_step(checkpoints: Path) -> int:
    """The step of the newest checkpoint whose save finished: its trainer_state.json, written last, holds JSON (a kill
    can land while it is still empty); 0: none yet."""
    steps = []
    for state in checkpoints.glob("checkpoint-*/trainer_state.json"):
        try:
            json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        steps.append(int(state.parent.name.removeprefix("checkpoint-")))
    return max(steps, default=0)


def test_an_interrupted_run_resumes_and_one_with_other_settings_is_refused(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    flags = resume_flags(tiny_checkpoint, review_data, tmp_path)
    first = start_in_own_group(uv_run("train-local", *flags), tmp_path.parent / f"{tmp_path.name}.log")
    checkpoints = tmp_path / "checkpoints"
    deadline = time.monotonic() + 300
    # Any complete checkpoint from step 8 on: rotation deletes each one a few steps later, so a poller that waits
    # for one name in particular can miss it and sleep through the whole run.
    while newest_complete_step(checkpoints) < 8 and time.monotonic() < deadline:
        if first.poll() is not None:
            break
        time.sleep(0.05)
    # kill -9 of `uv run` alone: the training process must not go on unseen (and write a model)
    left = send_and_wait(first, signal.SIGKILL, to_group=False)
    assert not left, f"still training 10 s after kill -9 of uv: {left}"
    saved = sorted(checkpoints.glob("checkpoint-*"))
    assert saved, "the first run never saved a checkpoint"
    assert not (tmp_path / "metrics.json").exists(), "the killed run must not look finished"

    # Other settings would not continue that run: refused, checkpoints untouched.
    other = resume_flags(tiny_checkpoint, review_data, tmp_path, "--training.learning_rate", "0.004")
    line = one_error_line(run("train-local", *other))
    assert "holds an unfinished run with other settings (training.learning_rate 0.005 → 0.004)" in line, line
    assert "--training.resume false" in line
    assert sorted(checkpoints.glob("checkpoint-*")) == saved

    # The same settings continue it; checkpoint rotation deletes the checkpoint it resumed from on the way.
    resumed_step = newest_complete_step(checkpoints)  # a save cut short by the kill is not resumed from
    resumed = train_ok(*flags)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "resuming from" in resumed.stderr
    assert metrics["resumed_from_step"] == resumed_step >= 8
    assert metrics["global_step"] == 260
    assert not (checkpoints / f"checkpoint-{resumed_step}").exists()
    # No evaluation while training (eval_strategy "no"): the final model gets its own pass.
    assert [(entry["step"], entry["eval_accuracy"]) for entry in evaluations(tmp_path)] == [(260, metrics["accuracy"])]


def test_a_resumed_run_reports_the_train_loss_of_the_whole_run(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed from a middle checkpoint or from the last one (a run stopped while saving its final model: no step left
    to train), a run reports the train loss the same run reports when it is not stopped: the mean over all its steps,
    not over the steps since the resume (the Trainer's own figure, and 0 with none)."""
    monkeypatch.chdir(PROJECT)
    flags = [
        "--data.max_train_samples", "192", "--training.num_train_epochs", "1",  # 12 steps of 16
        "--training.logging_steps", "2", "--training.save_strategy", "steps", "--training.save_steps", "4",
        "--training.save_total_limit", "3", "--training.eval_strategy", "no",
    ]  # fmt: skip
    whole = train(load_settings(train_flags(tiny_checkpoint, review_data, tmp_path / "whole", *flags), environ={}))
    assert whole["global_step"] == 12
    for step in (8, 12):
        whole_run, output = tmp_path / "whole" / checkpoints.CHECKPOINTS, tmp_path / f"from-{step}"
        kept = output / checkpoints.CHECKPOINTS  # that checkpoint, in a run not marked finished
        shutil.copytree(whole_run / f"checkpoint-{step}", kept / f"checkpoint-{step}")
        if step == 8:  # and the next one as a kill mid-save leaves it: trainer_state.json created, still empty
            shutil.copytree(whole_run / "checkpoint-12", kept / "checkpoint-12")
            (kept / "checkpoint-12" / "trainer_state.json").write_text("")
        run_record = json.loads((whole_run / checkpoints.RUN_FILE).read_text())
        (kept / checkpoints.RUN_FILE).write_text(json.dumps({**run_record, "finished": False}))
        resumed = train(load_settings(train_flags(tiny_checkpoint, review_data, output, *flags), environ={}))
        assert (resumed["resumed_from_step"], resumed["global_step"]) == (step, 12)
        assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-4), step


def fake_run(output: Path, steps: list[int], record: dict[str, Any] | None) -> Path:
    """Complete-looking checkpoints at `steps` under output/checkpoints, and their run.json (none: no record)."""
    folder = output / checkpoints.CHECKPOINTS
    for step in steps:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-12").mkdir(parents=True)  # saves cut short: no trainer_state.json, or an empty one
    (folder / "checkpoint-16").mkdir(parents=True)
    (folder / "checkpoint-16" / "trainer_state.json").touch()
    if record is not None:
        (folder / checkpoints.RUN_FILE).write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize("case", ["unfinished-same", "unfinished-other", "finished", "resume-false", "no-record"])
def test_the_rerun_plan(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which run a rerun continues, in process: the files decide, and a refusal names the flag that overrides it."""
    monkeypatch.chdir(PROJECT)
    flags = ["--training.output_dir", str(tmp_path), "--model.checkpoint", "./base"]
    settings = load_settings(flags, environ={})
    recorded = checkpoints.shaping_settings(settings)
    if case == "unfinished-other":
        recorded["training.learning_rate"] = 0.1
    record = None if case == "no-record" else {"settings": recorded, "finished": case == "finished"}
    folder = fake_run(tmp_path, [4, 8], record)
    if case == "resume-false":
        settings = load_settings([*flags, "--training.resume", "false"], environ={})
    if case in ("unfinished-other", "no-record"):
        with pytest.raises(checkpoints.RunError, match=r"--training\.resume false to start afresh"):
            checkpoints.plan(settings)
        return
    plan = checkpoints.plan(settings)
    if case == "unfinished-same":
        assert (plan.resume_from, plan.resume_step) == (folder / "checkpoint-8", 8)
        assert "removing checkpoint-12, checkpoint-16" in (plan.note or "")
        checkpoints.start(plan, settings)
        # The Trainer would take the others for its own (rotation keeps the highest steps): only complete ones stay.
        assert sorted(path.name for path in folder.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    else:
        assert (plan.resume_from, plan.resume_step) == (None, 0)
        checkpoints.start(plan, settings)
        assert list(folder.iterdir()) == [folder / checkpoints.RUN_FILE]  # the old run's checkpoints are gone
    assert plan.note


def test_a_kill_while_recording_the_run_leaves_the_previous_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.json emptied by a kill mid-write would refuse every rerun ("settings this version cannot read")."""
    monkeypatch.chdir(PROJECT)
    settings = load_settings(["--training.output_dir", str(tmp_path), "--model.checkpoint", "./base"], environ={})
    folder = fake_run(tmp_path, [4, 8], {"settings": checkpoints.shaping_settings(settings), "finished": False})

    def killed_mid_write(path: Path, *args: Any, **kwargs: Any) -> int:
        path.write_bytes(b"")  # opened for writing, killed before a byte went in
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", killed_mid_write)
        with pytest.raises(KeyboardInterrupt):
            checkpoints.finish(folder)
    assert checkpoints.plan(settings).resume_from == folder / "checkpoint-8"  # still the unfinished run, resumable


def test_two_cpu_processes_train_one_model(tiny_checkpoint: Path, review_data: Path, tmp_path: Path) -> None:
    # accelerate's `--cpu --num_processes 2` starts one process (its multi-CPU path needs mpirun); `--multi_gpu`
    # on a machine without a GPU starts two through torchrun, and the Trainer joins them in a gloo DDP group.
    done = run(
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "-m", "{{ cookiecutter.package_name }}.train",
        *train_flags(tiny_checkpoint, review_data, tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    final_models = [p for p in tmp_path.rglob("model.safetensors") if "checkpoints" not in p.parts]
    assert final_models == [tmp_path / "model.safetensors"]
    assert done.stdout.count("saved the model to") == 1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 14  # 200 rows over 2 processes x batch 16 = 7 steps per epoch
    # The loss the run reports is the model's mean cross-entropy, not that times the number of processes.
    assert metrics["loss"] == pytest.approx(held_out_loss(tmp_path), rel=0.02)


def held_out_loss(model_dir: Path) -> float:
    """A saved model's mean cross-entropy on the review set's held-out rows (test.csv), computed without the Trainer."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts, labels = zip(*reviews(240)[200:], strict=True)
    batch = tokenizer(list(texts), truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(labels)))


def test_gradient_accumulation_keeps_the_loss_a_mean(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches of 8 accumulated train like one batch of 16: same data order, and a learning rate too small to
    move the loss, so both runs report the untrained model's loss (not twice it for the accumulated one)."""
    monkeypatch.chdir(PROJECT)
    losses = []
    for batch_size, accumulation in ((16, 1), (8, 2)):
        flags = train_flags(
            tiny_checkpoint, review_data, tmp_path / str(accumulation),
            "--training.learning_rate", "1e-9", "--training.num_train_epochs", "1", "--data.max_train_samples", "64",
            "--training.per_device_batch_size", str(batch_size),
            "--training.gradient_accumulation_steps", str(accumulation),
        )  # fmt: skip
        losses.append(train(load_settings(flags, environ={}))["train_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=0.1)


@pytest.fixture(scope="module")
def three_label_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-3-labels"), num_labels=3)


# The cases that differ from a good run by their flags alone.
BAD_FLAGS = {
    "unknown-split": ["--data.eval_split", "validation"],
    "missing-text-column": ["--data.text_column", "review"],
    "hub-dataset-offline": ["--data.dataset", "imdb"],
    "relative-missing-dataset": ["--data.dataset", "./no-such-reviews"],
    "hub-checkpoint-offline": ["--model.checkpoint", "distilbert-base-uncased"],
    "wandb-without-login": ["--training.report_to", "wandb"],
    "push-offline": ["--training.push_to_hub", "true"],
    "push-without-token": ["--training.push_to_hub", "true"],
}
HUB_HINT = (  # the tests run with HF_HUB_OFFLINE=1, as a user whose machine has no Hub
    "offline mode is on and it is not in the Hugging Face cache: give a local path, e.g. --{field} ./path; "
    "or run once with HF_HUB_OFFLINE unset to download it"
)


@pytest.mark.parametrize("offline", [True, False])
def test_the_hint_for_a_hub_name_that_cannot_load_fits_the_offline_switch(
    offline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline mode on: the name is not in the cache, and saying "set HF_HUB_OFFLINE=1" would send the user in a
    circle. Off: the Hub itself did not answer."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    for field, name in (("model.checkpoint", "distilbert-base-uncased"), ("data.dataset", "imdb")):
        line = cannot_load(field, name, OSError("We couldn't connect to 'https://huggingface.co' to load the files"))
        assert line.startswith(f"{field}: cannot load {name!r}: We couldn't connect"), line
        assert ("HF_HUB_OFFLINE unset" in line) is offline, line
        assert ("set HF_HUB_OFFLINE=1 when it is in the Hugging Face cache" in line) is not offline, line
        assert f"--{field} ./path" in line
    assert cannot_load("data.dataset", "./reviews", OSError("connection reset")).endswith("connection reset")


def without_credentials(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker and Hub cases: no W&B login, an offline Hub with a token, or no Hugging Face token at all."""
    if case == "wandb-without-login":
        for name in ("WANDB_API_KEY", "WANDB_MODE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    elif case == "push-offline":
        monkeypatch.setenv("HF_TOKEN", "hf_test")
    elif case == "push-without-token":
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def write_bad_data(case: str, tmp_path: Path, review_data: Path) -> Path:
    """The dataset of each input-problem case, one file or a folder of them; the review data for the other cases."""
    jsonl = ['{"text": "fine", "label": 0}', '{"text": "good", "label": 1}', '{"text": "odd", "label": '] * 5
    numbers_among_texts = [{"text": "fine", "label": 0}, {"text": "good", "label": 1}, {"text": 5, "label": 0}] * 5
    one_file = {
        "malformed-csv": ("train.csv", "text,label\nfine,0\ngood,1,extra\nodd,1\n"),
        "missing-label-cell": ("train.csv", "text,label\nfine,0\ngood,\nodd,1\nbad,0\n"),
        # JSON lines keep the number a number
        "a-number-among-texts": ("train.jsonl", "".join(json.dumps(row) + "\n" for row in numbers_among_texts)),
    }
    reviews = (review_data / "train.csv").read_text()
    folder_of_files = {
        "malformed-csv-in-a-folder": {"train.csv": reviews, "test.csv": "text,label\nfine,0\ngood,1,extra\n"},
        "files-with-other-columns": {"train.csv": reviews, "test.csv": "text,label,source\nfine,0,web\n"},
        "malformed-json-line": {"train.jsonl": "\n".join(jsonl) + "\n", "test.jsonl": jsonl[0] + "\n"},
        "empty-json-file": {"train.jsonl": "", "test.jsonl": jsonl[0] + "\n"},
    }
    csv_rows: dict[str, list[tuple[str, int]]] = {
        "label-out-of-range": [("fine", 0), ("good", 1), ("odd", 2)] * 5,
        "empty-dataset": [],
        "empty-text-cell": [("fine", 0), ("good", 1), ("odd", 0), ("", 1)] * 5,
        "numbers-for-texts": [("17", 0), ("42", 1)] * 5,
    }
    folder = tmp_path / case
    if case in ("missing-dataset", "missing-checkpoint-and-dataset"):
        return tmp_path / "nope"
    if case in csv_rows:
        return write_csv(folder / "train.csv", csv_rows[case])
    if case in one_file:
        name, text = one_file[case]
        folder.mkdir()
        (folder / name).write_text(text)
        return folder / name
    if case in folder_of_files:
        folder.mkdir()
        for name, text in folder_of_files[case].items():
            (folder / name).write_text(text)
        return folder
    return review_data


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-dataset", "data.dataset: local path"),
        ("relative-missing-dataset", "data.dataset: local path ./no-such-reviews does not exist"),  # as typed
        ("malformed-csv", "train.csv': Error tokenizing data. C error: Expected 2 fields in line 3, saw 3"),
        # in a folder, the file; in JSON lines, the line (the parsers name neither)
        ("malformed-csv-in-a-folder", "': test.csv: Error tokenizing data. C error: Expected 2 fields in line 3"),
        ("malformed-json-line", "': train.jsonl: line 3: Expecting value (column 26)"),
        ("empty-json-file", "': train.jsonl: the file is empty"),
        ("files-with-other-columns", "differ in columns: there are 1 new columns ({'source'})"),
        ("missing-checkpoint-and-dataset", "model.checkpoint: local path /no/such/model does not exist; data.dataset:"),
        ("unknown-split", "data.eval_split: unknown split 'validation'; the dataset has: train, test"),
        ("missing-text-column", "data.text_column: no column 'review'"),
        ("model-label-mismatch", "classifies into 3 labels but the data has 2"),
        ("label-out-of-range", "labels [2] in column 'label' are outside 0..1"),
        ("empty-dataset", "is empty"),
        ("empty-text-cell", "data.dataset: row 4 of the train split has no text (an empty 'text' cell)"),
        ("missing-label-cell", "data.dataset: row 2 of the train split has no label (an empty 'label' cell)"),
        (
            "numbers-for-texts",
            "data.text_column: 'text' holds int64 values, not text (row 1 of the train split holds 17)",
        ),
        ("a-number-among-texts", "not text (row 3 of the train split holds 5)"),
        ("hub-dataset-offline", "data.dataset: cannot load 'imdb'"),
        ("hub-checkpoint-offline", "model.checkpoint: cannot load 'distilbert-base-uncased'"),
        ("wandb-without-login", "training.report_to: wandb needs WANDB_API_KEY (or `wandb login`"),
        ("push-offline", "training.push_to_hub: the Hub cannot be reached (HF_HUB_OFFLINE is set)"),
        ("push-without-token", "training.push_to_hub: no Hugging Face token (set HF_TOKEN"),
    ],
)
def test_input_problems_are_found_before_anything_is_written(
    case: str,
    expected: str,
    tiny_checkpoint: Path,
    three_label_checkpoint: Path,
    review_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In process (each command start costs seconds): the same preflight train-local runs before it writes."""
    checkpoint, extra = tiny_checkpoint, BAD_FLAGS.get(case, [])
    data = write_bad_data(case, tmp_path, review_data)
    if case == "missing-checkpoint-and-dataset":
        checkpoint = Path("/no/such/model")
    elif case == "model-label-mismatch":
        checkpoint = three_label_checkpoint
    elif case == "label-out-of-range":
        extra = ["--data.label_names", '["neg", "pos"]']
    output = tmp_path / "out"
    monkeypatch.chdir(PROJECT)
    without_credentials(case, tmp_path, monkeypatch)
    settings = load_settings([*train_flags(checkpoint, data, output), *extra], environ={})
    with pytest.raises(PreflightError) as raised:
        preflight(settings)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)
    if case.startswith("hub-"):
        assert HUB_HINT.format(field=expected.partition(":")[0]) in str(raised.value)
    assert not output.exists()


def test_max_length_beyond_the_checkpoint_is_cut_to_its_limit_with_a_note(
    tiny_checkpoint: Path,
    review_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(PROJECT)
    flags = [*train_flags(tiny_checkpoint, review_data, tmp_path), "--model.max_length", "1024"]
    inputs = preflight(load_settings(flags, environ={}))
    assert inputs.max_length == 64  # the tiny model's position table
    assert "note: model.max_length 1024 is beyond the checkpoint's 64: using 64" in capsys.readouterr().err


def test_train_local_reports_input_problems_in_one_line_and_writes_nothing(review_data: Path, tmp_path: Path) -> None:
    output, data = tmp_path / "out", write_bad_data("malformed-csv-in-a-folder", tmp_path, review_data)
    done = run("train-local", *train_flags(Path("/no/such/model"), data, output))
    line = one_error_line(done)
    assert f"model.checkpoint: local path /no/such/model does not exist; data.dataset: cannot load '{data}'" in line
    assert "Failed to read file" not in done.stderr, "datasets' reader logged the error before the line saying it"
    assert not output.exists(), "a run refused before training must write nothing"


@pytest.mark.parametrize(
    ("stop", "to_group"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-uv-alone", "ctrl-c-to-the-group", "sigterm-to-uv"],
)
# kill -9 of uv: test_an_interrupted_run_resumes_and_one_with_other_settings_is_refused
def test_stopping_uv_run_train_local_stops_training(
    stop: signal.Signals, to_group: bool, tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    """Ctrl-C, to uv alone or to the whole group as a terminal sends it, or SIGTERM to uv (`kill`, a job scheduler):
    within 10 s nothing of `uv run train-local` trains on, it says so in one line, and no final model is saved."""
    flags = train_flags(tiny_checkpoint, review_data, tmp_path / "model", "--training.num_train_epochs", "400")
    log = tmp_path / "train.log"
    leader = start_in_own_group(uv_run("train-local", *flags), log)
    deadline = time.monotonic() + 300
    while "it/s]" not in log.read_text(errors="replace") and leader.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # until the progress bar shows training under way
    assert leader.poll() is None, log.read_text()[-2000:]
    left = send_and_wait(leader, stop, to_group=to_group)
    assert not left, f"still running 10 s after {stop.name}: {left}"
    assert not (tmp_path / "model" / "metrics.json").exists(), "a stopped run must not save a final model"
    said = log.read_text(errors="replace")
    assert "error: interrupted; no model was saved" in said
    assert "Traceback" not in said


@pytest.mark.parametrize("delay_s", [0.5, 1.5])
def test_ctrl_c_while_train_local_starts_is_one_line_and_writes_nothing(
    delay_s: float, tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    """Ctrl-C in the seconds before training starts, while the settings, torch and transformers load."""
    output = tmp_path / "model"
    command = uv_run("train-local", *train_flags(tiny_checkpoint, review_data, output))
    code, errors = ctrl_c_while_starting(command, delay_s, tmp_path / "train.log")
    assert errors == ["error: interrupted before training started; nothing was written"]
    assert code == 130
    assert not output.exists()


# What train-local does when Ctrl-C comes during its exec: the signal, held, waits in the training module's interpreter.
HELD_STOP_OVER_EXEC = """
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
os.kill(os.getpid(), signal.SIGINT)
os.execv(sys.executable, [sys.executable, "-m", "{{ cookiecutter.package_name }}.train", *sys.argv[1:]])
"""


def test_a_ctrl_c_held_over_the_exec_is_one_line_and_writes_nothing(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    output = tmp_path / "model"
    done = run(sys.executable, "-c", HELD_STOP_OVER_EXEC, *train_flags(tiny_checkpoint, review_data, output))
    assert one_error_line(done) == "error: interrupted before training started; nothing was written"
    assert done.returncode == 130
    assert not output.exists()


STOP_WHILE_CHILDREN_START = """
import os, signal, sys
from {{ cookiecutter.package_name }} import lifetime
lifetime.interrupt_on_sigterm()
try:
    with lifetime.children_leave_stops_to_this_process():
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        print("inside")
    print("lost")
except KeyboardInterrupt:
    print("raised as the block ended")
"""


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_children_start_is_held_not_lost(stop: str) -> None:
    """serve starts its inference workers inside children_leave_stops_to_this_process: a Ctrl-C or SIGTERM then must
    still stop the server."""
    done = run(sys.executable, "-c", STOP_WHILE_CHILDREN_START, stop)
    assert done.stdout.splitlines() == ["inside", "raised as the block ended"], done.stderr


DROPPED_STOP = """
import os, signal
from {{ cookiecutter.package_name }}.lifetime import interrupt_on_sigterm, raise_if_stopping

class Finalised:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while Python runs a finaliser
        for _ in range(1000):
            pass  # the handler runs here, and Python drops what it raises

interrupt_on_sigterm()
Finalised()
try:
    raise_if_stopping()
except KeyboardInterrupt:
    print("stopped")
"""


def test_an_interrupt_python_dropped_in_a_finaliser_is_raised_again_without_a_traceback() -> None:
    done = subprocess.run([sys.executable, "-c", DROPPED_STOP], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "stopped\n", "")


STOP_TURNED_INTO_ANOTHER_ERROR = """
import os, signal
from {{ cookiecutter.package_name }}.lifetime import exit_on_interrupt, interrupt_on_sigterm

interrupt_on_sigterm()
with exit_on_interrupt("while starting"):
    try:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives inside a library's import
    except KeyboardInterrupt as interrupted:  # and the library answers with an error of its own
        raise ModuleNotFoundError("Could not import module 'PreTrainedModel'") from interrupted
"""


def test_a_stop_a_library_turned_into_another_error_while_starting_is_still_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STOP_TURNED_INTO_ANOTHER_ERROR], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "\nerror: interrupted while starting\n")


def test_a_stop_whose_interrupt_was_dropped_still_ends_training_at_the_next_step(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python drops a KeyboardInterrupt raised inside a finaliser (a progress bar's `__del__`, say): once Ctrl-C was
    pressed, training raises it again at its next step, before any checkpoint, and saves no model."""
    monkeypatch.chdir(PROJECT)
    monkeypatch.setattr(lifetime, "_stopping", True)  # the handler ran; the exception it raised vanished
    output = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        train(load_settings(train_flags(tiny_checkpoint, review_data, output), environ={}))
    assert not list(output.rglob("checkpoint-*")), "training went on past its first step"
    assert not (output / "metrics.json").exists()
