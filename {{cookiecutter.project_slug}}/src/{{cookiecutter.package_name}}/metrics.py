"""Classification metrics computed locally (no metric downloads): accuracy and macro-averaged F1."""

import numpy as np
from numpy.typing import NDArray
from transformers import EvalPrediction


def classification_metrics(predicted: NDArray[np.int64], expected: NDArray[np.int64]) -> dict[str, float]:
    classes = np.union1d(predicted, expected)
    f1_scores = []
    for label in classes:
        true_positive = float(np.sum((predicted == label) & (expected == label)))
        predicted_count = float(np.sum(predicted == label))
        expected_count = float(np.sum(expected == label))
        denominator = predicted_count + expected_count
        f1_scores.append(2 * true_positive / denominator if denominator else 0.0)
    return {"accuracy": float(np.mean(predicted == expected)), "f1_macro": float(np.mean(f1_scores))}


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """The Trainer's metric hook: logits → label ids → metrics."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return classification_metrics(np.argmax(logits, axis=-1), np.asarray(prediction.label_ids))
