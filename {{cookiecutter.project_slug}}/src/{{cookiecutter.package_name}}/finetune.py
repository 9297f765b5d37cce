"""Fine-tune the checkpoint on the dataset with the Hugging Face Trainer (run it through `uv run train-local`).

`python -m {{ cookiecutter.package_name }}.train` (train.py) starts it: one process on a CPU or one GPU; several
through `accelerate launch` (train-local and scripts/sky_run.sh start it so). Writes to `training.output_dir`:
checkpoints under `checkpoints/` while training (see checkpoints.py for reruns), then the final model, tokenizer, its
model card (`README.md`), `metrics.json` and `curves.png`; TensorBoard event files under `runs/` with
`training.report_to tensorboard`. Everything that can be checked is checked before anything is
written: the model checkpoint and the dataset (their problems reported together), the tracker, the Hub push.
"""

import contextlib
import importlib.metadata
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from huggingface_hub import HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.integrations.integration_utils import TensorBoardCallback

from {{ cookiecutter.package_name }} import checkpoints
from {{ cookiecutter.package_name }}.curves import plot_curves
from {{ cookiecutter.package_name }}.data import DataError, LabelledSplits, cannot_load, prepare, tokenize
from {{ cookiecutter.package_name }}.launch import TRAIN_ABOUT, TRAIN_SECTIONS
from {{ cookiecutter.package_name }}.lifetime import end_with_parent, interrupt_on_sigterm, raise_if_stopping
from {{ cookiecutter.package_name }}.metrics import compute_metrics
from {{ cookiecutter.package_name }}.predictor import METRICS_FILE, input_limit
from {{ cookiecutter.package_name }}.settings import (
    ModelSettings,
    Settings,
    TrainingSettings,
    first_line,
    is_local_reference,
    settings_or_exit,
    tracker_installed,
)

TENSORBOARD_DIR = "runs"  # under training.output_dir, beside the model (the Trainer's default is inside checkpoints/)
MODEL_CARD = "README.md"
FULL_DISK_BYTES = 16 * 2**20  # a save that failed with less than this left free failed for want of space


class CheckpointError(Exception):
    """A problem with `model.checkpoint`, phrased for a person in one line."""


class PreflightError(Exception):
    """The run cannot start: every problem with the checkpoint, the data and the tracker, joined in one line."""


class DivergedError(Exception):
    """Training produced a loss that is not a finite number."""


@dataclass(frozen=True)
class Inputs:
    """What preflight checked: the data, and the checkpoint's configuration and tokenizer."""

    splits: LabelledSplits
    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    max_length: int


def precision(mixed_precision: str) -> str:
    """`auto`: bf16 where the GPU supports it, else fp16 on a GPU, fp32 ("no") on a CPU."""
    if mixed_precision != "auto":
        return mixed_precision
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def training_arguments(settings: TrainingSettings) -> TrainingArguments:
    mixed_precision = precision(settings.mixed_precision)
    return TrainingArguments(
        output_dir=str(settings.output_dir / checkpoints.CHECKPOINTS),
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
        logging_nan_inf_filter=False,  # a diverging loss must show, not be averaged away
        report_to=settings.report_to,
        # No accelerator: say so, so that several CPU processes (torchrun) form a gloo DDP group.
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=mixed_precision == "bf16",
        fp16=mixed_precision == "fp16",
        load_best_model_at_end=settings.load_best_model_at_end,
        metric_for_best_model=settings.metric_for_best_model,
        # The Trainer's own push, once, when the final model is saved (token: HF_TOKEN or `hf auth login`).
        push_to_hub=settings.push_to_hub,
        hub_model_id=settings.hub_model_id,
        hub_strategy="end",
    )


def load_checkpoint(settings: ModelSettings) -> tuple[PretrainedConfig, PreTrainedTokenizerBase]:
    """The checkpoint's configuration and tokenizer (small files): enough to check it before loading weights."""
    if is_local_reference(settings.checkpoint) and not Path(settings.checkpoint).expanduser().exists():
        raise CheckpointError(f"model.checkpoint: local path {settings.checkpoint} does not exist")
    try:
        return AutoConfig.from_pretrained(settings.checkpoint), AutoTokenizer.from_pretrained(settings.checkpoint)
    except (OSError, ValueError) as error:
        raise CheckpointError(cannot_load("model.checkpoint", settings.checkpoint, error)) from error


def preflight(settings: Settings) -> Inputs:
    """Check the checkpoint, the data and the tracker, and raise PreflightError with every problem found."""
    problems, splits, loaded = [], None, None
    try:
        loaded = load_checkpoint(settings.model)
    except CheckpointError as error:
        problems.append(str(error))
    try:
        splits = prepare(settings.data, seed=settings.training.seed)
    except DataError as error:
        problems.append(str(error))
    if loaded and splits:
        config, _ = loaded
        is_classifier = any(name.endswith("ForSequenceClassification") for name in config.architectures or [])
        if is_classifier and config.num_labels != len(splits.label_names):
            problems.append(
                f"model.checkpoint {settings.model.checkpoint!r} classifies into {config.num_labels} labels but the "
                f"data has {len(splits.label_names)} ({splits.label_names}); use a base checkpoint or matching "
                "data.label_names"
            )
    problems += tracker_problems(settings.training.report_to)
    if settings.training.push_to_hub:
        problems += hub_problems()
    if problems or not (loaded and splits):
        raise PreflightError("; ".join(problems))
    config, tokenizer = loaded
    limit = input_limit(config, tokenizer)
    max_length = settings.model.max_length
    if limit and max_length > limit:
        print(f"note: model.max_length {max_length} is beyond the checkpoint's {limit}: using {limit}", file=sys.stderr)
        max_length = limit
    return Inputs(splits, config, tokenizer, max_length)


def tracker_problems(tracker: str) -> list[str]:
    """What stops `training.report_to` from logging: its package missing, or W&B with no way to log in."""
    if tracker == "none":
        return []
    if not tracker_installed(tracker):
        return [f"training.report_to: {tracker} is not installed here (uv sync --extra tracking)"]
    netrc = Path.home() / ".netrc"
    wandb_login = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")
    offline = os.environ.get("WANDB_MODE") in {"offline", "disabled"}
    if tracker == "wandb" and not (os.environ.get("WANDB_API_KEY") or offline or wandb_login):
        return ["training.report_to: wandb needs WANDB_API_KEY (or `wandb login`, or WANDB_MODE=offline)"]
    return []


def tracker_run(tracker: str, *, main_process: bool) -> contextlib.AbstractContextManager[object]:
    """MLflow: one run around the training and the final evaluation. The Trainer's callback ends a run it started
    when training ends, and the final evaluation would then log into a second run."""
    if tracker != "mlflow" or not main_process:
        return contextlib.nullcontext()
    import mlflow  # noqa: PLC0415 - the tracking extra; checked by preflight

    return mlflow.start_run()


def hub_problems() -> list[str]:
    """What stops `training.push_to_hub`, found before training rather than after it."""
    token = get_token()  # HF_TOKEN, or the one `hf auth login` stored
    if not token:
        return ["training.push_to_hub: no Hugging Face token (set HF_TOKEN or run `hf auth login`)"]
    try:
        HfApi().whoami(token=token)
    except OfflineModeIsEnabled:
        return ["training.push_to_hub: the Hub cannot be reached (HF_HUB_OFFLINE is set)"]
    except HfHubHTTPError as error:
        return [f"training.push_to_hub: the Hub refused the token ({first_line(error)})"]
    except OSError as error:  # requests' connection errors
        return [f"training.push_to_hub: the Hub cannot be reached ({first_line(error)})"]
    return []


def load_model(checkpoint: str, label_names: list[str]) -> PreTrainedModel:
    """The checkpoint's weights with a classification head sized for `label_names`."""
    try:
        model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(
            checkpoint,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
        )
    except (OSError, ValueError) as error:
        raise CheckpointError(cannot_load("model.checkpoint", checkpoint, error)) from error
    return model


class StopOnDivergence(TrainerCallback):
    """Stop at the first logged loss (train or eval) that is not a finite number: nothing after it is worth saving."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        logs: dict[str, Any] = kwargs.get("logs") or {}
        for key in ("loss", "eval_loss"):
            if key in logs and not math.isfinite(logs[key]):
                raise DivergedError(f"{key} became {logs[key]} at step {state.global_step}")


class StopWhenInterrupted(TrainerCallback):
    """Ctrl-C's KeyboardInterrupt can land in a progress bar's `__del__`, where Python drops it: raise it again."""

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        raise_if_stopping()

    on_evaluate = on_save = on_step_end


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    return value


def free_space(folder: Path) -> int:
    """Bytes free on the disk that holds `folder` (or the nearest existing folder above it)."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    return shutil.disk_usage(existing).free


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(finite_or_none(value), indent=2, allow_nan=False) + "\n")


def write_model_card(trainer: Trainer, settings: Settings, label_names: list[str], folder: Path) -> None:
    """The Trainer's model card (base checkpoint, dataset, hyperparameters, eval results), with the labels and the
    project's description as its intended use, as `folder/README.md`."""
    data, base = settings.data.dataset, settings.model.checkpoint
    local_data, local_base = is_local_reference(data), is_local_reference(base)
    trainer.create_model_card(  # written into the Trainer's output folder; local paths appear by their name only
        model_name=settings.training.hub_model_id or settings.training.output_dir.name,
        # A local base has no Hub id: its name would become a huggingface.co link (and a license lookup) to some other
        # model, and a base_model entry the Hub would reject.
        finetuned_from=None if local_base else base,
        tasks="text-classification",
        dataset=Path(data).name if local_data else data,
        dataset_tags=None if local_data else data,
    )
    card = ModelCard.load(settings.training.output_dir / checkpoints.CHECKPOINTS / MODEL_CARD)
    try:  # the project's description, from its installed metadata (pyproject.toml)
        description = importlib.metadata.metadata("{{ cookiecutter.project_slug }}")["Summary"]
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        description = "Text classification."
    labels = ", ".join(f"`{name}`" for name in label_names)
    intended = f"## Intended uses & limitations\n\n{description}\n\nLabels, in class-index order: {labels}.\n"
    card.text = card.text.replace("## Intended uses & limitations\n\nMore information needed\n", intended)
    if local_base:
        local = f"This model is a fine-tuned version of the local checkpoint `{Path(base).name}` on "
        card.text = card.text.replace("This model was trained from scratch on ", local)
    card.save(folder / MODEL_CARD)


def save_final(trainer: Trainer, settings: Settings, metrics: dict[str, Any]) -> None:
    """Write the servable model, its card, curves and metrics where serving looks for them. Everything is written
    into a staging folder first (seconds) and then renamed into place (milliseconds), metrics.json last, marking
    completion: a stop while saving leaves the previous model whole. With training.push_to_hub the Trainer pushes
    the model and card when it saves."""
    output_dir = settings.training.output_dir
    staging = output_dir / ".final-incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))  # weights, config (with id2label), tokenizer
    write_model_card(trainer, settings, metrics["label_names"], staging)
    write_json(staging / "log_history.json", trainer.state.log_history)
    plot_curves(trainer.state.log_history, staging / "curves.png")
    write_json(staging / METRICS_FILE, metrics)
    (output_dir / METRICS_FILE).unlink(missing_ok=True)  # the previous model's figures go before its files do
    for item in sorted(staging.iterdir(), key=lambda item: item.name == METRICS_FILE):
        item.chmod(0o644)  # transformers writes weights owner-only; the serving image reads them as another user
        item.replace(output_dir / item.name)
    staging.rmdir()


def final_evaluation(trainer: Trainer) -> dict[str, float]:
    """The eval metrics of the model the run ends with. When the Trainer evaluated it at the last step (eval_strategy
    "epoch" at the end of the last epoch, the defaults), those are reused: a second pass over the eval set would take
    as long and give the same figures. Otherwise (another step, no eval_strategy, the best checkpoint loaded at the
    end) a fresh pass."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if evaluations and evaluations[-1]["step"] == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return {key: value for key, value in evaluations[-1].items() if key != "step"}
    return trainer.evaluate()


def run_train_loss(
    log_history: list[dict[str, Any]], resume_step: int, call_loss: float, global_step: int
) -> float | None:
    """The mean training loss over the whole run. The Trainer's own figure covers only the steps of this call (0 when a
    run resumed from its last checkpoint trains none); the losses logged before the resume are in the log history the
    checkpoint restored, each the mean over the steps since the previous one. None: no step's loss is known."""
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and entry["step"] <= resume_step:
            total += entry["loss"] * (entry["step"] - previous)
            steps += entry["step"] - previous
            previous = entry["step"]
    trained_now = global_step - resume_step
    total += call_loss * trained_now
    steps += trained_now
    return total / steps if steps else None


def build_trainer(
    model: PreTrainedModel,
    args: TrainingArguments,
    train_set: datasets.Dataset,
    eval_set: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
) -> Trainer:
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[StopOnDivergence(), StopWhenInterrupted()],
    )
    # The classification heads' loss is a plain mean over the batch. The Trainer takes any model whose forward accepts
    # **kwargs (these do) for one that divides its loss by the batch's token count itself, and then multiplies the loss
    # by the number of processes and skips the division by gradient_accumulation_steps: losses and gradients N times
    # too large under DDP or with accumulation. Saying the model takes no loss arguments keeps the mean a mean.
    trainer.model_accepts_loss_kwargs = False
    return trainer


def train(settings: Settings) -> dict[str, Any]:
    args = training_arguments(settings.training)
    # Before the model loads: a checkpoint without this task's head (distilbert-base-uncased) gets one drawn at random,
    # and the same seed must draw the same one. The Trainer seeds only later, when it is built.
    set_seed(settings.training.seed)
    with args.main_process_first(desc="check the inputs and the output folder"):
        plan = checkpoints.plan(settings)
        inputs = preflight(settings)
        model = load_model(settings.model.checkpoint, inputs.splits.label_names)
        if args.should_save:
            if plan.note:
                print(plan.note, file=sys.stderr)
            checkpoints.start(plan, settings)
        tokenizer, data = inputs.tokenizer, settings.data
        train_set = tokenize(inputs.splits.train, tokenizer, data, inputs.max_length)
        eval_set = tokenize(inputs.splits.eval, tokenizer, data, inputs.max_length)
    trainer = build_trainer(model, args, train_set, eval_set, tokenizer)
    for callback in trainer.callback_handler.callbacks:
        # Event files beside the model, not inside checkpoints/ (TENSORBOARD_LOGGING_DIR, when set, still wins).
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(settings.training.output_dir / TENSORBOARD_DIR)
    with tracker_run(settings.training.report_to, main_process=trainer.is_world_process_zero()):
        result = trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from else None)
        evaluation = final_evaluation(trainer)
    raise_if_stopping()  # nothing is saved after a stop, even one the last steps dropped
    state = trainer.state
    train_loss = run_train_loss(state.log_history, plan.resume_step, result.training_loss, state.global_step)
    for key, value in (("train loss", train_loss or 0.0), ("eval loss", evaluation.get("eval_loss", 0.0))):
        if not math.isfinite(value):
            raise DivergedError(f"the {key} is {value}")
    metrics: dict[str, Any] = {
        "train_loss": train_loss,
        "global_step": state.global_step,
        "resumed_from_step": plan.resume_step,
        "label_names": inputs.splits.label_names,
        "train_samples": len(train_set),
        "eval_samples": len(eval_set),
        **{key.removeprefix("eval_"): value for key, value in evaluation.items()},
    }
    if trainer.is_world_process_zero():
        save_final(trainer, settings, metrics)
        checkpoints.finish(plan.checkpoints)
    return metrics


def main(argv: list[str] | None = None) -> None:
    end_with_parent()
    interrupt_on_sigterm()
    settings = settings_or_exit(argv, about=TRAIN_ABOUT, sections=TRAIN_SECTIONS)
    output = settings.training.output_dir
    try:
        metrics = train(settings)
    except (PreflightError, CheckpointError, checkpoints.RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except DivergedError as error:
        print(  # on a line of its own: a progress bar may hold the cursor
            f"\nerror: training diverged ({error}); no model was saved: lower training.learning_rate or check the "
            f"data, then rerun with --training.resume false (the checkpoints in {output} come from this run)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    except OSError as error:  # e.g. an output folder another user owns, or a full disk
        where = f" {error.filename}" if error.filename else ""
        print(
            f"\nerror: cannot use{where}: {error.strerror or error} (training.output_dir is {output})", file=sys.stderr
        )
        raise SystemExit(1) from None
    except (SafetensorError, RuntimeError) as error:
        # Saving to a full disk raises safetensors' error or torch.save's, not an OSError; torch's does not say why.
        if isinstance(error, RuntimeError) and free_space(output) > FULL_DISK_BYTES:
            raise
        reason = first_line(error) if isinstance(error, SafetensorError) else "the disk is full"
        print(
            f"\nerror: cannot save in {output}: {reason}; free some space, then rerun the same command to resume",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        saved = checkpoints.last_checkpoint(output / checkpoints.CHECKPOINTS)
        rerun = f"resume from {saved}" if saved else "start again (no checkpoint was saved yet)"
        print(f"\nerror: interrupted; no model was saved; rerun the same command to {rerun}", file=sys.stderr)
        raise SystemExit(130) from None
    if torch.distributed.is_initialized():
        # Leave the group before exiting: a gloo group torn down by interpreter exit can abort a process (SIGABRT,
        # "terminate called without an active exception") after its work is done.
        torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        shown = {key: metrics[key] for key in ("accuracy", "f1_macro", "loss") if key in metrics}
        print(f"saved the model to {output} — eval {json.dumps(finite_or_none(shown))}")
