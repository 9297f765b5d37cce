"""Inference on a saved model folder (what `train-local` writes): texts in, labels and class probabilities out.

No web code here: the LitServe API (`serve.py`), the benchmark and notebooks all call `Predictor.predict`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

REQUIRED_FILES = ("config.json",)
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
# Tokenizers without a real limit report this sentinel (int(1e30)) as their model_max_length.
NO_TOKENIZER_LIMIT = 10**12


class ModelDirError(Exception):
    """The model folder is missing or is not a saved classifier; the message names the folder and the problem."""


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # the probability of `label`
    probabilities: dict[str, float]  # every class, in the model's label order


def resolve_device(device: str) -> str:
    """`auto` → `cuda` when a GPU is visible, else `cpu`; an explicit device is kept as given (e.g. `cuda:1`)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelDirError(f"device {device!r} was asked for but no CUDA GPU is visible")
    return device


def check_model_dir(model_dir: Path) -> PretrainedConfig:
    """The folder's model config, after checking that the folder holds a classifier with weights and a tokenizer."""
    if not model_dir.is_dir():
        raise ModelDirError(f"{model_dir} is not a folder; train a model with `uv run train-local` or point to one")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        missing.append("model.safetensors")
    if not any(model_dir.glob("tokenizer*")):
        missing.append("tokenizer.json")
    if missing:
        raise ModelDirError(f"{model_dir} is not a saved model folder (missing {', '.join(missing)})")
    try:
        config: PretrainedConfig = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ModelDirError(f"{model_dir / 'config.json'} is unreadable: {first_line(error)}") from error
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ModelDirError(f"{model_dir} holds {architectures or 'no architecture'}, not a sequence classifier")
    return config


def label_names(config: PretrainedConfig) -> list[str]:
    """Class names in class-index order."""
    id2label: dict[Any, str] = dict(config.id2label or {})  # from_pretrained makes the keys ints
    return [id2label[index] for index in range(len(id2label))]


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Predictor:
    """A classifier and its tokenizer on one device; `predict` is thread-compatible but not meant to be shared."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int, chunk_size: int = 64
    ) -> None:
        self.model = model
        self.model.train(False)  # inference: no dropout
        self.tokenizer = tokenizer
        self.labels = label_names(model.config)
        self.max_length = min(max_length, *self._model_limits())
        self.chunk_size = chunk_size

    @classmethod
    def load(cls, model_dir: Path, device: str = "auto", max_length: int = 256, chunk_size: int = 64) -> "Predictor":
        """Load a saved model folder onto `device` (auto | cpu | cuda | cuda:N); raises ModelDirError."""
        check_model_dir(model_dir)
        target = resolve_device(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        except (OSError, ValueError) as error:
            raise ModelDirError(f"cannot load the model in {model_dir}: {first_line(error)}") from error
        return cls(model.to(target), tokenizer, max_length, chunk_size)

    def _model_limits(self) -> list[int]:
        """Longest input the model can take: the tokenizer's limit and the position-embedding table's size."""
        limits = [self.tokenizer.model_max_length]
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int):
            limits.append(positions)
        return [limit for limit in limits if 0 < limit < NO_TOKENIZER_LIMIT]

    @property
    def device(self) -> torch.device:
        device: torch.device = self.model.device
        return device

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One prediction per text, in order. Texts longer than `max_length` tokens are truncated."""
        # Similar lengths in one forward pass waste less padding: sort by length, run in chunks, restore the order.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        results: dict[int, Prediction] = {}
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            probabilities = self.probabilities([texts[index] for index in chunk])
            for index, row in zip(chunk, probabilities.tolist(), strict=True):
                best = max(range(len(row)), key=row.__getitem__)
                results[index] = Prediction(self.labels[best], row[best], dict(zip(self.labels, row, strict=True)))
        return [results[index] for index in range(len(texts))]

    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """Softmax over the classes for one forward pass, as a (len(texts), num_labels) float32 CPU tensor."""
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        logits = self.model(**encoded).logits
        return torch.softmax(logits.float(), dim=-1).cpu()
