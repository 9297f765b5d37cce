"""Inference on a saved model folder (what `train-local` writes): texts in, labels and class probabilities out.

No web code here: the LitServe API (`serve.py`), the benchmark and notebooks all call `Predictor.predict`.
"""

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from {{ cookiecutter.package_name }}.settings import Precision, first_line

REQUIRED_FILES = ("config.json",)
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
METRICS_FILE = "metrics.json"  # the final evaluation, which train-local writes last: a model folder with it is complete
# Tokenizers without a real limit report this sentinel (int(1e30)) as their model_max_length.
NO_TOKENIZER_LIMIT = 10**12
# What `auto` runs on a CPU. int8 would need >= 99.5 % label agreement with fp32 and accuracy within 0.5 points on the
# template's held-out reviews; on MiniLM fine-tuned by the README's offline command it agreed on 92.5 % and lost 5
# points, while serving 1.5-1.8x the requests (the template's bench/serving.py and bench/README.md). So fp32; int8 is
# a setting away.
AUTO_CPU_PRECISION: Precision = "fp32"


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


def resolve_precision(precision: Precision, device: str) -> Precision:
    """`auto` → bf16 (or fp16) on a GPU, AUTO_CPU_PRECISION (fp32) on a CPU; int8 is for CPUs, half precision for
    GPUs."""
    on_gpu = device.startswith("cuda")
    if precision == "auto":
        if on_gpu:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return AUTO_CPU_PRECISION
    if precision == "int8" and on_gpu:
        raise ValueError("int8 (dynamic quantization) runs on a CPU; on a GPU use fp16, bf16 or auto")
    if precision in ("fp16", "bf16") and not on_gpu:
        raise ValueError(f"{precision} needs a GPU; on a CPU use int8, fp32 or auto")
    return precision


def with_precision(model: PreTrainedModel, precision: Precision) -> PreTrainedModel:
    """The model in `precision` (already resolved): int8 quantizes its Linear layers; fp16/bf16 halves its weights."""
    if precision == "int8":
        with warnings.catch_warnings():
            # torch announces that torch.ao.quantization moves to the torchao package; until it does, this is the
            # dependency-free int8 path (the template's bench/serving.py measures it). Its warnings would print at
            # every start.
            warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
            quantize: Callable[..., Any] = torch.ao.quantization.quantize_dynamic  # unannotated in torch
            quantized: PreTrainedModel = quantize(model, {torch.nn.Linear}, dtype=torch.qint8)
        return quantized
    if precision in ("fp16", "bf16"):
        # torch's own Module.to: transformers wraps the model's `to` in an untyped decorator. In place, like any module.
        torch.nn.Module.to(model, torch.float16 if precision == "fp16" else torch.bfloat16)
        # Half-precision attention with a padding mask goes to cuDNN first on recent GPUs (Hopper and newer), and cuDNN
        # builds a plan for every new (batch, length) shape: on an H200 each first-seen shape cost tens of ms, so a
        # server with mixed batches and lengths ran slower in bf16 than in fp32 (the template's bench/README.md, "On a
        # GPU"). The flash and memory-efficient kernels need no per-shape plan. Process-wide, as torch keeps the
        # setting.
        torch.backends.cuda.enable_cudnn_sdp(False)
    return model


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


def check_finite_weights(model_dir: Path) -> None:
    """Refuse a model whose weights hold NaN or infinity (a diverged run): every answer would be NaN."""
    for path in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("pytorch_model*.bin")):
        try:
            if path.suffix == ".bin":
                tensors: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
            else:
                tensors = load_file(path)
        except (OSError, RuntimeError, ValueError) as error:
            raise ModelDirError(f"{path} is unreadable: {first_line(error)}") from error
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelDirError(f"{path} holds NaN or infinite weights ({name}): retrain the model")


def input_limit(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The longest input the model takes: its position-embedding table and its tokenizer's limit (None: unknown)."""
    positions = getattr(config, "max_position_embeddings", None)
    limits = [tokenizer.model_max_length, *([positions] if isinstance(positions, int) else [])]
    known = [limit for limit in limits if 0 < limit < NO_TOKENIZER_LIMIT]
    return min(known) if known else None


def label_names(config: PretrainedConfig) -> list[str]:
    """Class names in class-index order."""
    id2label: dict[Any, str] = dict(config.id2label or {})  # from_pretrained makes the keys ints
    return [id2label[index] for index in range(len(id2label))]


class Predictor:
    """A classifier and its tokenizer on one device; `predict` is thread-compatible but not meant to be shared."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        chunk_size: int = 64,
        precision: Precision = "fp32",
    ) -> None:
        self.model = model
        self.precision = precision
        self.model.train(False)  # inference: no dropout
        self.tokenizer = tokenizer
        self.labels = label_names(model.config)
        self.max_length = min(max_length, input_limit(model.config, tokenizer) or max_length)
        self.chunk_size = chunk_size

    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: str = "auto",
        max_length: int = 256,
        chunk_size: int = 64,
        precision: Precision = "fp32",
    ) -> "Predictor":
        """Load a saved model folder onto `device` (auto | cpu | cuda | cuda:N) in `precision` (auto | fp32 | int8 |
        bf16 | fp16); raises ModelDirError, or ValueError for a precision the device cannot run."""
        check_model_dir(model_dir)
        target = resolve_device(device)
        chosen = resolve_precision(precision, target)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        except (OSError, ValueError) as error:
            raise ModelDirError(f"cannot load the model in {model_dir}: {first_line(error)}") from error
        return cls(with_precision(model.to(target), chosen), tokenizer, max_length, chunk_size, chosen)

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
