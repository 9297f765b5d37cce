"""A bad answer stops the bake with one line naming the answer and why, a non-zero exit, and no directory left."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEMPLATE

BAD_ANSWERS = {
    "slug-with-space": ({"project_slug": "my project"}, "project_slug 'my project'"),
    "slug-uppercase": ({"project_slug": "MyProject"}, "project_slug 'MyProject'"),
    "package-keyword": ({"package_name": "class"}, "package_name 'class' is a Python keyword"),
    "package-soft-keyword": ({"package_name": "match"}, "package_name 'match' is a Python keyword"),
    "package-not-identifier": ({"package_name": "my-package"}, "package_name 'my-package' is not an importable"),
    "package-leading-digit": ({"package_name": "1st"}, "package_name '1st' is not an importable"),
    "package-shadows-stdlib": ({"package_name": "json"}, "package_name 'json' would shadow"),
    "package-shadows-dependency": ({"package_name": "torch"}, "package_name 'torch' would shadow"),
    "empty-project-name": ({"project_name": " ", "project_slug": "x"}, "project_name is empty"),
    "empty-checkpoint": ({"model_checkpoint": ""}, "model_checkpoint '' is empty"),
    "malformed-checkpoint": ({"model_checkpoint": "bert base!"}, "model_checkpoint 'bert base!' is not a Hub id"),
    "checkpoint-three-parts": ({"model_checkpoint": "a/b/c"}, "model_checkpoint 'a/b/c' is not a Hub id"),
    "checkpoint-double-dash": ({"model_checkpoint": "org/--x"}, "model_checkpoint 'org/--x' is not a Hub id"),
    "empty-dataset": ({"dataset": "  "}, "dataset '  ' is empty"),
    "malformed-dataset": ({"dataset": "imdb?split=train"}, "dataset 'imdb?split=train' is not a Hub id"),
    "bad-email": ({"author_email": "someone-at-example.com"}, "author_email 'someone-at-example.com'"),
    "email-without-domain": ({"author_email": "me@localhost"}, "author_email 'me@localhost'"),
    "unsupported-python": ({"python_version": "3.9"}, "python_version '3.9' is not one of: 3.11, 3.12, 3.13"),
    "unknown-cloud": ({"default_cloud": "oracle"}, "default_cloud 'oracle' is not one of"),
    "unknown-license": ({"license": "WTFPL"}, "license 'WTFPL' is not one of"),
    "bad-github-answer": ({"include_github_actions": "maybe"}, "include_github_actions 'maybe' is not one of"),
    "bad-version": ({"version": "v1"}, "version 'v1' is not a PEP 440 version"),
    "bad-registry": ({"image_registry": "GHCR.io/Me"}, "image_registry 'GHCR.io/Me'"),
}


@pytest.mark.parametrize("case", BAD_ANSWERS)
def test_bad_answer_is_rejected_cleanly(case: str, tmp_path: Path) -> None:
    answers, message = BAD_ANSWERS[case]
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(out), str(TEMPLATE)]
        + [f"{key}={value}" for key, value in answers.items()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert message in errors[0]
    assert list(out.iterdir()) == [], "a rejected bake left files behind"


def test_good_answers_pass_the_same_checks(tmp_path: Path) -> None:
    """The checks are not simply rejecting everything: the defaults and local paths bake."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "-o",
            str(tmp_path),
            str(TEMPLATE),
            "model_checkpoint=~/models/bert",
            "dataset=sentence-transformers/imdb.v2",
            "package_name=reviews_2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("error: ")]
