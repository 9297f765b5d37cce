"""Tiny models and data built offline for the tests: a 2-layer DistilBERT with a WordPiece vocabulary trained here,
and a small labelled review set where the words decide the label."""

import csv
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import DistilBertConfig, DistilBertForSequenceClassification, PreTrainedTokenizerFast

POSITIVE = ["great", "wonderful", "moving", "brilliant", "funny", "superb", "charming", "excellent"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "weak", "clumsy", "tedious", "bad"]
NOUNS = ["film", "movie", "plot", "cast", "script", "ending", "story", "acting"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def reviews(count: int, seed: int = 7) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = i % 2
        words = POSITIVE if label else NEGATIVE
        text = f"the {rng.choice(NOUNS)} was {rng.choice(words)} and the {rng.choice(NOUNS)} felt {rng.choice(words)}"
        rows.append((text, label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, int]], header: tuple[str, str] = ("text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_review_folder(folder: Path) -> Path:
    """train.csv (200 rows) and test.csv (40 rows): splits named by file, as datasets expects."""
    rows = reviews(240)
    write_csv(folder / "train.csv", rows[:200])
    write_csv(folder / "test.csv", rows[200:])
    return folder


def build_tiny_classifier(folder: Path, num_labels: int = 2) -> Path:
    """A randomly initialised DistilBERT classifier (dim 32, 2 layers) with its own WordPiece tokenizer."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [text for text, _ in reviews(240)]
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=SPECIAL_TOKENS))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    config = DistilBertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=64,
    )
    config.num_labels = num_labels
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def build_diverging_classifier(folder: Path) -> Path:
    """The tiny classifier with NaN in its head: its loss is NaN from the first step, as in a diverged run."""
    build_tiny_classifier(folder)
    model = DistilBertForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    model.save_pretrained(folder)
    return folder
