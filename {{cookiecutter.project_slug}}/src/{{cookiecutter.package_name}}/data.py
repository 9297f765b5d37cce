"""The labelled text dataset: load it from the Hub or a local file/folder, pick splits and labels, tokenize."""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import pyarrow as pa
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from {{ cookiecutter.package_name }}.settings import DataSettings, first_line, is_local_reference

# datasets' builder for each local file type
BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
EVAL_SPLIT_PREFERENCE = ("test", "validation")
# Words in the libraries' errors when the Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE=1 is set).
HUB_UNREACHABLE = ("couldn't connect", "couldn't reach", "offline", "localentrynotfound", "connection")


class DataError(Exception):
    """A problem with the dataset or its settings, phrased for a person in one line."""


def cannot_load(field: str, reference: str, error: Exception) -> str:
    """`field: cannot load 'x': reason`, and what to do when the reason is an unreachable Hub or offline mode."""
    message = f"{field}: cannot load {reference!r}: {first_line(error)}"
    if is_local_reference(reference) or not any(word in str(error).lower() for word in HUB_UNREACHABLE):
        return message
    # datasets has its own switch (HF_DATASETS_OFFLINE, else HF_HUB_OFFLINE); transformers reads the Hub's
    offline = datasets.config.HF_HUB_OFFLINE if field.startswith("data.") else huggingface_hub.constants.HF_HUB_OFFLINE
    if offline:
        return message + (
            f" (offline mode is on and it is not in the Hugging Face cache: give a local path, e.g. --{field} ./path; "
            "or run once with HF_HUB_OFFLINE unset to download it)"
        )
    return message + (
        f" (the Hugging Face Hub is not reachable: give a local path, e.g. --{field} ./path; or set "
        "HF_HUB_OFFLINE=1 when it is in the Hugging Face cache; or HF_ENDPOINT=<url> for a mirror)"
    )


@dataclass(frozen=True)
class LabelledSplits:
    train: datasets.Dataset
    eval: datasets.Dataset
    label_names: list[str]


def _load_local(reference: str) -> datasets.DatasetDict:
    path = Path(reference).expanduser()
    if not path.exists():
        raise DataError(f"data.dataset: local path {reference} does not exist")  # as the person wrote it
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(str(path))  # a save_to_disk folder
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    if path.is_dir():
        return _as_dict(datasets.load_dataset(str(path)))  # splits from file names: train.csv, test.csv, ...
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"data.dataset: {reference} is not a {', '.join(BUILDERS)} file or a dataset folder")
    return _as_dict(datasets.load_dataset(builder, data_files={"train": str(path)}))


def _as_dict(loaded: Any) -> datasets.DatasetDict:
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(f"data.dataset: expected a dataset with named splits, got {type(loaded).__name__}")
    return loaded


def load_splits(settings: DataSettings) -> datasets.DatasetDict:
    """All splits of the dataset, from a local path or the Hugging Face Hub."""
    # datasets' file readers log "Failed to read file ..." before they raise; the DataError says it in one line
    logging.getLogger("datasets.packaged_modules").setLevel(logging.CRITICAL)
    try:
        if is_local_reference(settings.dataset):
            return _load_local(settings.dataset)
        return _as_dict(datasets.load_dataset(settings.dataset, settings.config_name))
    except DataError:
        raise
    except Exception as error:  # datasets raises many types; the person needs the dataset and the reason
        if "corresponds to no data" in str(error):  # datasets' words for a file with a header and no rows
            raise DataError(f"data.dataset: {settings.dataset!r} is empty: it has no rows") from error
        reason = _parser_reason(error)
        culprit = _culprit(settings.dataset) if is_local_reference(settings.dataset) else None
        if culprit is not None:
            raise DataError(f"data.dataset: cannot load {settings.dataset!r}: {culprit}") from error
        if isinstance(reason, datasets.table.CastError):  # its first line is "Couldn't cast"
            columns = reason.details()
            raise DataError(f"data.dataset: the files of {settings.dataset!r} differ in columns: {columns}") from error
        raise DataError(cannot_load("data.dataset", settings.dataset, reason)) from error


def _parser_reason(error: Exception) -> Exception:
    """The parser's reason (a malformed CSV or JSON line) rather than datasets' "an error occurred"."""
    if isinstance(error, datasets.exceptions.DatasetGenerationError) and isinstance(error.__cause__, Exception):
        return error.__cause__
    return error


def _culprit(reference: str) -> str | None:
    """The first of a local dataset's files that does not read on its own, and why, with the line for JSON: a failed
    load of a folder names no file, and a JSON parser's reason names no line. Reads the files again, so it runs only
    once a load has failed; streamed, so nothing is cached or held in memory."""
    path = Path(reference).expanduser()
    for builder, file in _data_files(path):
        where = "" if file == path else f"{os.path.relpath(file, path)}: "  # the folder is named already
        # A single file's failed load already gave its parser's reason: it is not read through again for it.
        problem = _file_problem(builder, file, read_through=file != path)
        if problem is not None:
            return where + problem
    return None


def _file_problem(builder: str, file: Path, read_through: bool) -> str | None:
    """Why one data file does not read: empty, not JSON where it should be, or (`read_through`) the reason datasets'
    `builder` gives when it reads the file alone; None when none of these finds a problem."""
    try:
        if file.stat().st_size == 0:
            return "the file is empty"
        problem = _json_syntax(file) if builder == "json" else None
        if problem is None and read_through:
            for _ in datasets.load_dataset(builder, data_files=str(file), split="train", streaming=True):
                pass
    except OSError as error:  # unreadable: the reason without the path, which the message has already
        return error.strerror or first_line(error)
    except Exception as error:
        return first_line(_parser_reason(error))
    return problem


def _data_files(path: Path) -> list[tuple[str, Path]]:
    """(builder, file) for each file a load of `path` reads: the file itself, or the split files datasets picks in a
    folder (it ignores files of other types there)."""
    if path.is_file():
        builder = BUILDERS.get(path.suffix.lower())
        return [] if builder is None else [(builder, path)]
    try:
        resolved = datasets.load_dataset_builder(str(path))
    except Exception:
        return []
    return [(resolved.name, Path(file)) for files in (resolved.config.data_files or {}).values() for file in files]


def _json_syntax(file: Path) -> str | None:
    """Where a JSON Lines file (or a JSON document over many lines) stops being JSON, lines counted from 1."""
    try:
        with file.open(encoding="utf-8") as lines:
            numbered = ((number, line) for number, line in enumerate(lines, 1) if line.strip())
            for count, (number, line) in enumerate(numbered):
                try:
                    json.loads(line.rstrip("\r\n"))  # an error at the line's end, not at "line 2 column 1"
                except json.JSONDecodeError as error:
                    if count > 0:  # JSON Lines until here
                        return f"line {number}: {error.msg} (column {error.colno})"
                    break  # not JSON Lines from its first line: one document, parsed whole below
            else:
                return None
        json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        return f"line {error.lineno}: {error.msg} (column {error.colno})"
    except UnicodeDecodeError as error:
        return f"not UTF-8 text (byte {error.start} cannot be decoded)"
    return None


def _pick_eval(
    splits: datasets.DatasetDict, settings: DataSettings, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    train = _split(splits, settings.train_split, "data.train_split", settings)
    if settings.eval_split is not None:
        return train, _split(splits, settings.eval_split, "data.eval_split", settings)
    for name in EVAL_SPLIT_PREFERENCE:
        if name in splits and name != settings.train_split:
            return train, _split(splits, name, "data.eval_split", settings)
    if len(train) < 2:
        raise DataError(
            f"data.train_split: {settings.train_split!r} has {len(train)} row(s): too few to carve an eval split from"
        )
    carved = train.train_test_split(test_size=settings.eval_fraction, seed=seed)
    return carved["train"], carved["test"]


def _split(splits: datasets.DatasetDict, name: str, field: str, settings: DataSettings) -> datasets.Dataset:
    """The named split, once its text and label columns are checked cell by cell."""
    if name not in splits:
        raise DataError(f"{field}: unknown split {name!r}; the dataset has: {', '.join(splits)}")
    split = splits[name]
    for column, column_field in (
        (settings.text_column, "data.text_column"),
        (settings.label_column, "data.label_column"),
    ):
        if column not in split.column_names:
            raise DataError(f"{column_field}: no column {column!r}; the dataset has: {', '.join(split.column_names)}")
    _check_cells(split, settings, name)
    return split


def _subset(split: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    # Shuffle before cutting: Hub datasets are often sorted by label (imdb is).
    if limit is None or limit >= len(split):
        return split
    return split.shuffle(seed=seed).select(range(limit))


def _check_cells(split: datasets.Dataset, settings: DataSettings, which: str) -> None:
    """Every row has a non-empty text and a label; the first that does not is named by its row number, counted from 1
    as people count the rows of a file (a CSV header not counted)."""
    texts = pa.chunked_array(split.data.column(settings.text_column))
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        # Name the first cell that is not text: the first row for a column of numbers, the odd one in mixed JSON lines.
        numbered = enumerate(split[settings.text_column])
        row, cell = next(((index, cell) for index, cell in numbered if not isinstance(cell, str)), (0, None))
        raise DataError(
            f"data.text_column: {settings.text_column!r} holds {texts.type} values, not text "
            f"(row {row + 1} of the {which} split holds {repr(cell)[:40]})"
        )
    for column, cells, what in (
        (settings.text_column, pc.or_kleene(pc.is_null(texts), pc.equal(pc.utf8_length(texts), 0)), "no text"),
        (settings.label_column, pc.is_null(pa.chunked_array(split.data.column(settings.label_column))), "no label"),
    ):
        row = pc.index(pc.fill_null(cells, True), True).as_py()
        if row >= 0:
            raise DataError(f"data.dataset: row {row + 1} of the {which} split has {what} (an empty {column!r} cell)")


def _label_names(train: datasets.Dataset, settings: DataSettings) -> list[str]:
    feature = train.features[settings.label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(settings.label_names or feature.names)
    if settings.label_names:
        return list(settings.label_names)
    return [str(value) for value in sorted(set(train[settings.label_column]))]


def _encode_labels(split: datasets.Dataset, column: str, names: list[str], which: str) -> datasets.Dataset:
    """Labels as ids 0..n-1: ids stay ids (checked), names become their index in `names`."""
    index = {name: i for i, name in enumerate(names)}
    values = set(split[column])
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        bad = sorted(value for value in values if not 0 <= value < len(names))
        if bad:
            raise DataError(
                f"data.label_column: {which} labels {bad[:5]} in column {column!r} are outside "
                f"0..{len(names) - 1} ({names})"
            )
        return split
    unknown = sorted(str(value) for value in values if str(value) not in index)
    if unknown:
        raise DataError(
            f"data.label_column: {which} labels {unknown[:5]} in column {column!r} are not among the label "
            f"names {names}"
        )
    return split.cast_column(column, datasets.ClassLabel(names=names))  # names → their ids


def prepare(settings: DataSettings, seed: int) -> LabelledSplits:
    """Train and eval splits with checked columns and labels as ids, subset as the settings ask."""
    splits = load_splits(settings)
    train, evaluation = _pick_eval(splits, settings, seed)
    train = _subset(train, settings.max_train_samples, seed)
    evaluation = _subset(evaluation, settings.max_eval_samples, seed)
    for split, which in ((train, "train"), (evaluation, "eval")):
        if len(split) == 0:
            raise DataError(f"data.dataset: the {which} split of {settings.dataset!r} is empty")
    names = _label_names(train, settings)
    if len(names) < 2:
        raise DataError(f"data.label_column: {settings.label_column!r} holds {len(names)} distinct label(s); need 2+")
    train = _encode_labels(train, settings.label_column, names, "train")
    evaluation = _encode_labels(evaluation, settings.label_column, names, "eval")
    return LabelledSplits(train=train, eval=evaluation, label_names=names)


def tokenize(
    split: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, settings: DataSettings, max_length: int
) -> datasets.Dataset:
    """Token ids and `labels`; padding is left to the collator (dynamic, per batch). datasets caches the result."""

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = dict(tokenizer(batch[settings.text_column], truncation=True, max_length=max_length))
        encoded["labels"] = batch[settings.label_column]
        return encoded

    return split.map(encode, batched=True, remove_columns=split.column_names, desc="tokenize")
