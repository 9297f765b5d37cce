"""The run behind `training.output_dir/checkpoints`: resume it, start afresh, or refuse, before anything is written.

Beside the Trainer's checkpoints, `run.json` keeps the settings that shape the model (model, data and the
hyperparameters) and whether the run finished. A rerun:
- resumes from the last complete checkpoint when the run is unfinished and those settings are unchanged, and removes
  the checkpoints whose save was cut short (a kill or a preempted machine mid-save), which the Trainer would take for
  its own;
- starts afresh when the run finished (the finished model stays in place until the new one is saved), when there
  are no checkpoints, or with `training.resume false`;
- is refused, in one line naming `--training.resume false`, when an unfinished run had other settings: its
  checkpoints are the only copy of that work.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.settings import Settings

CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's name for each saved step
RUN_FILE = "run.json"
# Training settings that change when and how a run logs or saves, not the model it converges to.
NOT_SHAPING = {"output_dir", "resume", "eval_strategy", "eval_steps", "save_strategy", "save_steps",
               "save_total_limit", "logging_steps", "report_to", "load_best_model_at_end", "metric_for_best_model",
               "push_to_hub", "hub_model_id"}  # fmt: skip


class RunError(Exception):
    """An existing run in the output folder stops this one; the message names the flag that overrides it."""


@dataclass(frozen=True)
class Plan:
    checkpoints: Path
    resume_from: Path | None  # the checkpoint to continue from, or None for a fresh run
    note: str | None  # what a person should hear about the choice
    # The step resumed from, read now: checkpoint rotation may delete that checkpoint during the run.
    resume_step: int = 0
    cut_short: tuple[Path, ...] = ()  # checkpoint folders of saves that did not finish, removed when resuming


def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint. The Trainer writes trainer_state.json last, and in place: a save cut short
    has none, or an empty or partial one."""
    step = path.name.removeprefix(CHECKPOINT_PREFIX)
    if not step.isdigit():
        return None
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    return int(step) if isinstance(state, dict) else None


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The Trainer checkpoint with the highest step (`checkpoint-<step>`), if any."""
    by_step = {step: path for path in checkpoints.glob(f"{CHECKPOINT_PREFIX}*") if (step := checkpoint_step(path))}
    return by_step[max(by_step)] if by_step else None


def shaping_settings(settings: Settings) -> dict[str, Any]:
    """The settings a resumed run must share with the run that wrote the checkpoints."""
    training = settings.training.model_dump(mode="json", exclude=NOT_SHAPING)
    return {
        **{f"model.{key}": value for key, value in settings.model.model_dump(mode="json").items()},
        **{f"data.{key}": value for key, value in settings.data.model_dump(mode="json").items()},
        **{f"training.{key}": value for key, value in training.items()},
    }


def _read_run(checkpoints: Path) -> dict[str, Any] | None:
    try:
        run = json.loads((checkpoints / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) and isinstance(run.get("settings"), dict) else None


def _write_run(checkpoints: Path, run: dict[str, Any]) -> None:
    """run.json replaced whole: a kill while writing leaves the previous record, not an empty file that would refuse
    every rerun as "settings this version cannot read"."""
    partial = checkpoints / f"{RUN_FILE}.partial"
    partial.write_text(json.dumps(run, indent=2) + "\n")
    partial.replace(checkpoints / RUN_FILE)


def plan(settings: Settings) -> Plan:
    """What this run does with the output folder's checkpoints; raises RunError when it must not touch them."""
    checkpoints = settings.training.output_dir / CHECKPOINTS
    last = last_checkpoint(checkpoints)
    if last is None:
        return Plan(checkpoints, None, None)
    if not settings.training.resume:
        return Plan(checkpoints, None, f"training.resume is false: starting afresh; removing {checkpoints}")
    run = _read_run(checkpoints)
    if run is not None and run.get("finished"):
        note = f"the run in {checkpoints.parent} finished: training afresh (its model stays until this one is saved)"
        return Plan(checkpoints, None, note)
    now = shaping_settings(settings)
    before = run["settings"] if run else {}
    changed = [f"{key} {before.get(key)!r} → {value!r}" for key, value in now.items() if before.get(key) != value]
    if run is None or changed:
        what = f"other settings ({', '.join(changed[:3])})" if run else "settings this version cannot read"
        raise RunError(
            f"{checkpoints} holds an unfinished run with {what}: rerun with its settings to resume it, or pass "
            "--training.resume false to start afresh (its checkpoints are then deleted)"
        )
    saves = sorted(checkpoints.glob(f"{CHECKPOINT_PREFIX}*"))
    cut_short = tuple(path for path in saves if checkpoint_step(path) is None)
    removing = f" (removing {', '.join(path.name for path in cut_short)}: saves cut short)" if cut_short else ""
    return Plan(checkpoints, last, f"resuming from {last}{removing}", checkpoint_step(last) or 0, cut_short)


def start(chosen: Plan, settings: Settings) -> None:
    """Clear the checkpoints of a run that is not continued, and record this run's settings (main process only)."""
    if chosen.resume_from is None:
        shutil.rmtree(chosen.checkpoints, ignore_errors=True)
    for folder in chosen.cut_short:
        shutil.rmtree(folder, ignore_errors=True)
    chosen.checkpoints.mkdir(parents=True, exist_ok=True)
    _write_run(chosen.checkpoints, {"settings": shaping_settings(settings), "finished": False})


def finish(checkpoints: Path) -> None:
    """Mark the run finished: a rerun trains afresh instead of resuming it."""
    run = _read_run(checkpoints) or {"settings": {}}
    _write_run(checkpoints, {**run, "finished": True})
