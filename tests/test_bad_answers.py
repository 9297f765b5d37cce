"""A bad answer stops the bake with one `error:` line naming the answer and why, and nothing else on either stream,
a non-zero exit, and no directory; any printable answer either bakes a project whose files all parse, or is refused
that way (a hypothesis property)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE, assert_parses
from cookiecutter.main import cookiecutter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BAD_ANSWERS = {
    "slug-with-space": ({"project_slug": "my project"}, "project_slug 'my project'"),
    "slug-uppercase": ({"project_slug": "MyProject"}, "project_slug 'MyProject'"),
    "slug-too-long-for-the-bucket": ({"project_slug": "a" * 51}, "is longer than 50 characters"),
    "name-without-letters": ({"project_name": "2024 !!"}, "project_slug: none can be derived from '2024 !!'"),
    "package-keyword": ({"package_name": "class"}, "package_name 'class' is a Python keyword"),
    "package-soft-keyword": ({"package_name": "match"}, "package_name 'match' is a Python keyword"),
    "package-not-identifier": ({"package_name": "my-package"}, "package_name 'my-package' is not an importable"),
    "package-leading-digit": ({"package_name": "1st"}, "package_name '1st' is not an importable"),
    "package-shadows-stdlib": ({"package_name": "json"}, "package_name 'json' would shadow"),
    "package-shadows-dependency": ({"package_name": "torch"}, "package_name 'torch' would shadow"),
    "package-shadows-locked-package": ({"package_name": "safetensors"}, "package_name 'safetensors' would shadow"),
    "package-shadows-own-tests": ({"package_name": "tests"}, "package_name 'tests' would shadow"),
    "empty-project-name": ({"project_name": " ", "project_slug": "x"}, "project_name is empty"),
    "name-with-newline": ({"project_name": "Two\nLines"}, "project_name must be one line of printable text"),
    "description-with-tab": ({"description": "a\tb"}, "description must be one line of printable text"),
    "author-with-line-separator": ({"author_name": "A\u2028B"}, "author_name must be one line of printable text"),
    "unclosed-jinja": ({"description": "a {{ b"}, "the answer 'a {{ b' is not a valid Jinja template"),
    "empty-checkpoint": ({"model_checkpoint": ""}, "model_checkpoint '' is empty"),
    "malformed-checkpoint": ({"model_checkpoint": "bert base!"}, "model_checkpoint 'bert base!' is not a Hub id"),
    "checkpoint-three-parts": ({"model_checkpoint": "a/b/c"}, "model_checkpoint 'a/b/c' is not a Hub id"),
    "checkpoint-double-dash": ({"model_checkpoint": "org/--x"}, "model_checkpoint 'org/--x' is not a Hub id"),
    "checkpoint-path-with-newline": ({"model_checkpoint": "/m\n"}, "model_checkpoint must be one line"),
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


def cookiecutter_cli(out: Path, answers: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The cookiecutter command a person runs, with answers on the command line; stdout and stderr together."""
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(out), str(TEMPLATE)]
        + [f"{key}={value}" for key, value in answers.items()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("case", BAD_ANSWERS)
def test_bad_answer_is_rejected_cleanly(case: str, tmp_path: Path) -> None:
    answers, message = BAD_ANSWERS[case]
    out = tmp_path / "out"
    out.mkdir()
    done = cookiecutter_cli(out, answers)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{done.stdout}"
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert list(out.iterdir()) == [], "a rejected bake left files behind"


def test_good_answers_pass_the_same_checks(tmp_path: Path) -> None:
    """The checks are not simply rejecting everything: unusual but valid answers bake, with derived names."""
    done = cookiecutter_cli(
        tmp_path,
        {
            "project_name": "Zoë's 2nd Review-Triage 😀",
            "description": 'Reads "reviews" from C:\\Users\\data\\',
            "model_checkpoint": "~/models/bert",
            "dataset": "sentence-transformers/imdb.v2",
        },
    )
    assert done.returncode == 0, done.stdout
    assert not [line for line in done.stdout.splitlines() if line.startswith("error: ")]
    project = tmp_path / "zoes-2nd-review-triage"
    assert (project / "src" / "zoes_2nd_review_triage" / "__init__.py").is_file()
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == 'Reads "reviews" from C:\\Users\\data\\'


def test_a_long_name_derives_a_slug_that_fits_the_bucket(tmp_path: Path) -> None:
    name = "A Very Long Project Name For Sorting Customer Reviews Into Urgent And Routine Piles"
    done = cookiecutter_cli(tmp_path, {"project_name": name})
    assert done.returncode == 0, done.stdout
    (project,) = tmp_path.iterdir()
    assert len(project.name) <= 50
    bucket = yaml.safe_load((project / "sky_task.yaml").read_text())["envs"]["OUTPUTS_BUCKET"]
    assert len(bucket) <= 63


# --- any printable answer: a valid project or one clean error ----------------------------------------------------

FREE_TEXT = ("project_name", "description", "author_name", "model_checkpoint", "dataset")
printable = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(FREE_TEXT), value=printable)
def test_any_answer_bakes_a_parseable_project_or_is_refused_in_one_line(
    name: str, value: str, tmp_path_factory: pytest.TempPathFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path_factory.mktemp("any")
    capfd.readouterr()
    stopped: int | str | None = None
    try:
        # In process (faster than the CLI), without the hook's `uv lock`: its PATH has no uv.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PATH", "/nonexistent")
            path = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(out), extra_context={name: value}))
    except SystemExit as stop:
        stopped = stop.code
    if stopped is None:
        for file in path.rglob("*"):
            if file.is_file():
                assert_parses(file)
        return
    said = capfd.readouterr()
    assert stopped == 2
    assert said.out == ""
    lines = said.err.splitlines()
    assert len(lines) == 1, said.err
    assert lines[0].startswith("error: ")
    assert list(out.iterdir()) == []
