"""Training curves as a PNG a person can open: train/eval loss and eval metrics per step."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # no display on servers and in containers
import matplotlib.pyplot as plt


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(float(entry["step"]), float(entry[key])) for entry in history if key in entry and "step" in entry]
    return [step for step, _ in points], [value for _, value in points]


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        steps, values = _series(history, key)
        loss_axes.plot(steps, values, marker="o", markersize=3, label=label)
    for key in ("eval_accuracy", "eval_f1_macro"):
        steps, values = _series(history, key)
        metric_axes.plot(steps, values, marker="o", label=key.removeprefix("eval_"))
    loss_axes.set(title="loss", xlabel="step")
    metric_axes.set(title="eval metrics", xlabel="step", ylim=(0, 1.02))
    for axes in (loss_axes, metric_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
