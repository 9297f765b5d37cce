"""`python -m {{ cookiecutter.package_name }}.train`: the training process that `uv run train-local`, `accelerate launch`
and the cloud job (scripts/sky_run.sh) start. The work is in finetune.py; this module loads it within reach of
Ctrl-C, since importing torch and transformers takes seconds: a stop then is one line, not a traceback.
"""

from {{ cookiecutter.package_name }}.launch import TRAIN_STARTING
from {{ cookiecutter.package_name }}.lifetime import (
    exit_on_interrupt,
    interrupt_on_sigterm,
    raise_if_stopping,
    release_stops,
)


def main(argv: list[str] | None = None) -> None:
    interrupt_on_sigterm()  # SIGTERM too: handlers set before the exec are gone
    with exit_on_interrupt(TRAIN_STARTING):
        release_stops()  # train-local held them over the exec: one that came meanwhile lands here
        from {{ cookiecutter.package_name }} import finetune  # noqa: PLC0415 - torch and transformers: seconds

        raise_if_stopping()  # a stop a finaliser dropped during the imports
    finetune.main(argv)


if __name__ == "__main__":
    main()
