"""Fine-tune the checkpoint on the dataset with the Hugging Face Trainer (run it through `uv run train-local`).

Started by `accelerate launch`, so the same code runs on a CPU, one or several GPUs, or several nodes. Writes to
`training.output_dir`: checkpoints under `checkpoints/` while training, then the final model, tokenizer,
`metrics.json` and `curves.png`.
"""

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from {{ cookiecutter.package_name }}.curves import plot_curves
from {{ cookiecutter.package_name }}.data import DataError, LabelledSplits, prepare, tokenize
from {{ cookiecutter.package_name }}.metrics import compute_metrics
from {{ cookiecutter.package_name }}.settings import ModelSettings, Settings, TrainingSettings, settings_or_exit

CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's name for each saved step


def precision(mixed_precision: str) -> str:
    """`auto`: bf16 where the GPU supports it, else fp16 on a GPU, fp32 ("no") on a CPU."""
    if mixed_precision != "auto":
        return mixed_precision
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The Trainer checkpoint with the highest step (`checkpoint-<step>`), if any."""
    by_step = {step: path for path in checkpoints.glob(f"{CHECKPOINT_PREFIX}*") if (step := checkpoint_step(path))}
    return by_step[max(by_step)] if by_step else None


def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint; the Trainer writes trainer_state.json last, so a save cut short has none."""
    step = path.name.removeprefix(CHECKPOINT_PREFIX)
    return int(step) if step.isdigit() and (path / "trainer_state.json").is_file() else None


def training_arguments(settings: TrainingSettings) -> TrainingArguments:
    mixed_precision = precision(settings.mixed_precision)
    return TrainingArguments(
        output_dir=str(settings.output_dir / CHECKPOINTS),
        num_train_epochs=settings.num_train_epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.per_device_batch_size,
        per_device_eval_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        weight_decay=settings.weight_decay,
        eval_strategy=settings.eval_strategy,
        eval_steps=settings.eval_steps,
        save_strategy=settings.save_strategy,
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        logging_steps=settings.logging_steps,
        report_to=settings.report_to,
        # No accelerator: say so, so that several CPU processes (torchrun) form a gloo DDP group.
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=mixed_precision == "bf16",
        fp16=mixed_precision == "fp16",
    )


def load_model(settings: ModelSettings, label_names: list[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The checkpoint with a classification head sized for `label_names`; a head of another size is an error."""
    try:
        config = AutoConfig.from_pretrained(settings.checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(settings.checkpoint)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise DataError(f"model.checkpoint: cannot load {settings.checkpoint!r}: {reason}") from error
    is_classifier = any(name.endswith("ForSequenceClassification") for name in config.architectures or [])
    if is_classifier and config.num_labels != len(label_names):
        raise DataError(
            f"model.checkpoint {settings.checkpoint!r} classifies into {config.num_labels} labels but the data has "
            f"{len(label_names)} ({label_names}); use a base checkpoint or matching data.label_names"
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        settings.checkpoint,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    return model, tokenizer


def save_final(trainer: Trainer, output_dir: Path, metrics: dict[str, Any]) -> None:
    """Write the servable model where serving looks for it; metrics.json is written last, marking completion."""
    staging = output_dir / ".final-incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))  # weights, config (with id2label), tokenizer
    for item in staging.iterdir():
        item.chmod(0o644)  # transformers writes weights owner-only; the serving image reads them as another user
        item.replace(output_dir / item.name)
    staging.rmdir()
    (output_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    plot_curves(trainer.state.log_history, output_dir / "curves.png")
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def train(settings: Settings) -> dict[str, Any]:
    args = training_arguments(settings.training)
    with args.main_process_first(desc="prepare the dataset"):
        splits: LabelledSplits = prepare(settings.data, seed=settings.training.seed)
        model, tokenizer = load_model(settings.model, splits.label_names)
        train_set = tokenize(splits.train, tokenizer, settings.data, settings.model.max_length)
        eval_set = tokenize(splits.eval, tokenizer, settings.data, settings.model.max_length)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    last = last_checkpoint(settings.training.output_dir / CHECKPOINTS) if settings.training.resume else None
    if last:
        print(f"resuming from {last}", file=sys.stderr)
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    evaluation = trainer.evaluate()
    metrics: dict[str, Any] = {
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "resumed_from_step": checkpoint_step(last) if last else 0,
        "label_names": splits.label_names,
        "train_samples": len(train_set),
        "eval_samples": len(eval_set),
        **{key.removeprefix("eval_"): value for key, value in evaluation.items()},
    }
    if trainer.is_world_process_zero():
        save_final(trainer, settings.training.output_dir, metrics)
    return metrics


def main() -> None:
    settings = settings_or_exit()
    try:
        metrics = train(settings)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if int(os.environ.get("RANK", "0")) == 0:
        shown = {key: metrics[key] for key in ("accuracy", "f1_macro", "loss") if key in metrics}
        print(f"saved the model to {settings.training.output_dir} — eval {json.dumps(shown)}")


if __name__ == "__main__":
    main()
