"""The predictor on the tiny DistilBERT: labels, probabilities, order, truncation, and clear errors for bad folders."""

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, DistilBertConfig, DistilBertModel

from {{ cookiecutter.package_name }}.predictor import ModelDirError, Predictor, check_model_dir, resolve_device, resolve_precision
from {{ cookiecutter.package_name }}.settings import Precision

from tests.tiny import NEGATIVE, POSITIVE, reviews


@pytest.fixture(scope="module")
def named_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier with class names, as train-local saves them."""
    folder = tmp_path_factory.mktemp("named")
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_checkpoint, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    model.save_pretrained(folder)
    for tokenizer_file in tiny_checkpoint.glob("tokenizer*"):
        shutil.copy(tokenizer_file, folder)
    return folder


@pytest.fixture(scope="module")
def predictor(named_checkpoint: Path) -> Predictor:
    return Predictor.load(named_checkpoint, device="cpu", max_length=256, chunk_size=3)


def test_one_prediction_per_text_with_every_class(predictor: Predictor) -> None:
    texts = [text for text, _ in reviews(7)]
    predictions = predictor.predict(texts)
    assert len(predictions) == len(texts)
    for prediction in predictions:
        assert list(prediction.probabilities) == ["negative", "positive"]
        assert math.isclose(sum(prediction.probabilities.values()), 1.0, rel_tol=1e-5)
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.__getitem__)
        assert prediction.score == prediction.probabilities[prediction.label]


def test_batched_answers_match_one_by_one_and_keep_the_order(predictor: Predictor) -> None:
    # Mixed lengths, more texts than one chunk (3): sorting by length and chunking must not reorder the answers.
    texts = ["bad", *(text for text, _ in reviews(5)), " ".join(POSITIVE), "ok", " ".join(NEGATIVE * 3)]
    together = predictor.predict(texts)
    alone = [predictor.predict([text])[0] for text in texts]
    for batched, single in zip(together, alone, strict=True):
        assert batched.label == single.label
        for name, probability in single.probabilities.items():
            assert math.isclose(batched.probabilities[name], probability, abs_tol=1e-5)
    # The untrained model still tells texts apart: a reordering would show here.
    assert len({round(p.probabilities["positive"], 6) for p in together}) > 1


def test_an_empty_batch_gives_no_predictions(predictor: Predictor) -> None:
    assert predictor.predict([]) == []


def test_text_longer_than_the_model_is_truncated(predictor: Predictor) -> None:
    # The tiny model has 64 positions and max_length asks for 256: the predictor keeps to what the model takes.
    assert predictor.max_length == 64
    long_text = " ".join(POSITIVE * 500)
    longer_text = long_text + " " + " ".join(NEGATIVE * 500)  # differs only after the cut
    first, second = predictor.predict([long_text, longer_text])
    assert first.probabilities == pytest.approx(second.probabilities, abs=1e-6)


def test_max_length_setting_shortens_inputs(named_checkpoint: Path) -> None:
    short = Predictor.load(named_checkpoint, device="cpu", max_length=8)
    assert short.max_length == 8
    # Everything after the first 6 word pieces ([CLS] + 6 + [SEP]) is cut, so these two read the same.
    a, b = short.predict(["the film was great and the cast felt superb", "the film was great and the ending bad"])
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_auto_device_is_cpu_without_a_gpu() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(named_checkpoint: Path) -> None:
    with pytest.raises(ModelDirError, match="no CUDA GPU"):
        Predictor.load(named_checkpoint, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predicts_on_the_gpu(named_checkpoint: Path, predictor: Predictor) -> None:
    on_gpu = Predictor.load(named_checkpoint, device="cuda")
    assert on_gpu.device.type == "cuda"
    text = "the film was great and the cast felt superb"
    assert on_gpu.predict([text])[0].probabilities == pytest.approx(
        predictor.predict([text])[0].probabilities, abs=1e-4
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_half_precision_on_the_gpu_turns_cudnn_attention_off(named_checkpoint: Path) -> None:
    # cuDNN attention builds a plan per new batch shape in half precision (predictor.with_precision says why).
    on_gpu = Predictor.load(named_checkpoint, device="cuda", precision="auto")
    assert on_gpu.precision in ("bf16", "fp16")
    cudnn_attention_enabled: Callable[[], bool] = torch.backends.cuda.cudnn_sdp_enabled  # unannotated in torch
    assert not cudnn_attention_enabled()
    assert len(on_gpu.predict(["the film was great", "a dull and clumsy plot"])) == 2


def test_labels_come_from_the_saved_config(named_checkpoint: Path) -> None:
    assert check_model_dir(named_checkpoint).id2label == {0: "negative", 1: "positive"}


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=r"nowhere is not a folder.*train-local"):
        Predictor.load(tmp_path / "nowhere")


def test_folder_without_weights_is_named(named_checkpoint: Path, tmp_path: Path) -> None:
    shutil.copy(named_checkpoint / "config.json", tmp_path)
    with pytest.raises(ModelDirError, match=r"not a saved model folder \(missing model.safetensors, tokenizer.json\)"):
        check_model_dir(tmp_path)


def test_a_base_model_is_not_served(named_checkpoint: Path, tmp_path: Path) -> None:
    config = json.loads((named_checkpoint / "config.json").read_text())
    DistilBertModel(DistilBertConfig(**{k: v for k, v in config.items() if k != "architectures"})).save_pretrained(
        tmp_path
    )
    for tokenizer_file in named_checkpoint.glob("tokenizer*"):
        shutil.copy(tokenizer_file, tmp_path)
    with pytest.raises(ModelDirError, match="not a sequence classifier"):
        check_model_dir(tmp_path)


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_a_trained_model(trained_model: Path) -> None:
    texts = [text for text, _ in reviews(64, seed=5)]
    fp32 = Predictor.load(trained_model, device="cpu", precision="fp32").predict(texts)
    int8 = Predictor.load(trained_model, device="cpu", precision="int8")
    assert int8.precision == "int8"
    assert any(isinstance(module, torch.ao.nn.quantized.dynamic.Linear) for module in int8.model.modules())
    answers = int8.predict(texts)
    agreement = sum(a.label == b.label for a, b in zip(fp32, answers, strict=True)) / len(texts)
    assert agreement >= 0.95
    assert max(abs(a.score - b.score) for a, b in zip(fp32, answers, strict=True)) < 0.1


@pytest.mark.parametrize(
    ("precision", "device", "expected"),
    [("auto", "cpu", "fp32"), ("fp32", "cpu", "fp32"), ("int8", "cpu", "int8"), ("fp16", "cuda:0", "fp16")],
)
def test_precision_resolves_per_device(precision: Precision, device: str, expected: str) -> None:
    assert resolve_precision(precision, device) == expected


@pytest.mark.parametrize(
    ("precision", "device", "message"),
    [("int8", "cuda", "int8 .* runs on a CPU"), ("fp16", "cpu", "fp16 needs a GPU"), ("bf16", "cpu", "bf16 needs")],
)
def test_a_precision_the_device_cannot_run_is_refused(precision: Precision, device: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_precision(precision, device)
