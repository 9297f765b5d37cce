"""`train-local` end to end on a tiny DistilBERT and a small review set, offline."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import BIN, PROJECT, offline_env, run, train_flags
from tests.tiny import build_tiny_classifier, write_csv

pytestmark = pytest.mark.slow


def train_ok(*flags: str) -> subprocess.CompletedProcess[str]:
    done = run("train-local", *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_train_local_writes_a_servable_model(trained_model: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json", "curves.png"):
        assert (trained_model / name).is_file(), name
        assert (trained_model / name).stat().st_mode & 0o044 == 0o044, f"{name} must be readable by the image's user"
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9  # the words decide the label: a working fine-tune learns them
    assert 0 <= metrics["f1_macro"] <= 1
    assert metrics["label_names"] == ["0", "1"]
    assert (metrics["train_samples"], metrics["eval_samples"]) == (200, 40)
    model = AutoModelForSequenceClassification.from_pretrained(trained_model)
    tokenizer = AutoTokenizer.from_pretrained(trained_model)
    assert model.config.id2label == {0: "0", 1: "1"}
    logits = model(**tokenizer(["the film was superb and the cast felt brilliant"], return_tensors="pt")).logits
    assert int(logits.argmax()) == 1


def test_same_seed_same_metrics(trained_model: Path, tiny_checkpoint: Path, review_data: Path, tmp_path: Path) -> None:
    train_ok(*train_flags(tiny_checkpoint, review_data, tmp_path))
    first = json.loads((trained_model / "metrics.json").read_text())
    second = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("loss", "accuracy", "f1_macro", "train_loss", "global_step"):
        assert first[key] == second[key], key


def test_interrupted_training_resumes_from_the_last_checkpoint(
    tiny_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    # 200 rows / batch 16 = 13 steps per epoch; 3 epochs = 39 steps, a checkpoint every 4.
    flags = train_flags(
        tiny_checkpoint, review_data, tmp_path,
        "--training.num_train_epochs", "3", "--training.save_strategy", "steps", "--training.save_steps", "4",
        "--training.save_total_limit", "null", "--training.eval_strategy", "no",
    )  # fmt: skip
    first = subprocess.Popen(
        [str(BIN / "train-local"), *flags], cwd=PROJECT, env=offline_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    checkpoint = tmp_path / "checkpoints" / "checkpoint-8"
    deadline = time.monotonic() + 300
    while not (checkpoint / "trainer_state.json").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # as a preempted machine would: no chance to clean up
    first.wait()
    assert checkpoint.is_dir(), "the first run never reached its second checkpoint"
    assert not (tmp_path / "metrics.json").exists(), "the killed run must not look finished"

    resumed = train_ok(*flags)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "resuming from" in resumed.stderr
    assert metrics["resumed_from_step"] >= 8
    assert metrics["global_step"] == 39


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


@pytest.fixture(scope="module")
def three_label_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-3-labels"), num_labels=3)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-dataset", "local path"),
        ("unknown-split", "data.eval_split: unknown split 'validation'; the dataset has: train, test"),
        ("missing-text-column", "data.text_column: no column 'review'"),
        ("model-label-mismatch", "classifies into 3 labels but the data has 2"),
        ("label-out-of-range", "labels [2] in column 'label' are outside 0..1"),
        ("empty-dataset", "is empty"),
        ("hub-dataset-offline", "data.dataset: cannot load 'imdb'"),
    ],
)
def test_bad_input_is_one_line_and_no_model(
    case: str, expected: str, tiny_checkpoint: Path, three_label_checkpoint: Path, review_data: Path, tmp_path: Path
) -> None:
    checkpoint, data, extra = tiny_checkpoint, review_data, []
    if case == "missing-dataset":
        data = tmp_path / "nope"
    elif case == "unknown-split":
        extra = ["--data.eval_split", "validation"]
    elif case == "missing-text-column":
        extra = ["--data.text_column", "review"]
    elif case == "model-label-mismatch":
        checkpoint = three_label_checkpoint
    elif case == "label-out-of-range":
        data = write_csv(tmp_path / "bad" / "train.csv", [("fine", 0), ("good", 1), ("odd", 2)] * 5)
        extra = ["--data.label_names", '["neg", "pos"]']
    elif case == "empty-dataset":
        data = write_csv(tmp_path / "empty" / "train.csv", [])
    elif case == "hub-dataset-offline":
        extra = ["--data.dataset", "imdb"]
    output = tmp_path / "out"
    done = run("train-local", *train_flags(checkpoint, data, output), *extra)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors, done.stderr[-2000:]
    assert expected in errors[0]
    assert "Traceback" not in done.stderr
    assert not (output / "model.safetensors").exists()
    assert not (output / "metrics.json").exists()
