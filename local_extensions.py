"""Checks on the cookiecutter answers, run while cookiecutter renders them: before any file is written.

cookiecutter.json's last variable, `__checked`, passes every answer through the `checked_answers` filter. A bad
answer prints one `error:` line on stderr and ends the run with exit code 2; nothing has been written yet. (A
failing pre-generation hook would do the same, but cookiecutter then logs a traceback.) The `slug` filter derives
the default `project_slug` from the project name; `cruft_json` writes the project's record of its template and answers.
"""

import json
import keyword
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

from jinja2 import Environment, Template, TemplateSyntaxError
from jinja2.ext import Extension

CHOICES = {
    "default_cloud": ("gcp", "aws", "azure", "kubernetes"),
    "python_version": ("3.11", "3.12", "3.13"),
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "Proprietary"),
    "include_github_actions": ("y", "n"),
}
# The bucket is `<slug>-outputs` and must stay within 63 characters (GCS, S3 and Azure alike); the SkyPilot cluster
# is `<slug>-train`.
MAX_SLUG = 50
SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE = re.compile(r"^[a-z][a-z0-9_]*$")
# Top-level modules of the generated project's locked environment (runtime, dev group, tracking extra), its dev-tasks
# helper and its own `tests` package: a package called like one of them would shadow it.
# tests/test_generated_project.py checks that this list covers what a synced project really installs.
# fmt: off
TAKEN_NAMES = frozenset({
    "absl", "accelerate", "aiohappyeyeballs", "aiohttp", "aiosignal", "alembic", "annotated_doc", "annotated_types",
    "anyio", "ast_serialize", "attr", "attrs", "blinker", "cachetools", "certifi", "cffi", "cfgv", "charset_normalizer",
    "click", "cloudpickle", "colorama", "contourpy", "coreweave_evaluations", "cryptography", "cuda", "cycler",
    "databricks", "datasets", "dateutil", "dev_tasks", "dill", "distlib", "distro", "docker", "dotenv", "fastapi",
    "filelock", "flask", "flask_cors", "fonttools", "frozenlist", "fsspec", "functorch", "git", "gitdb", "google",
    "graphene", "graphql", "graphql_relay", "grpc", "gunicorn", "h11", "harfile", "hf_xet", "httpcore", "httpcore2",
    "httptools", "httpx", "httpx2", "huey", "huggingface_hub", "hypothesis", "hypothesis_graphql", "identify", "idna",
    "importlib_metadata", "iniconfig", "isympy", "itsdangerous", "jinja2", "joblib", "jsonschema_rs", "kernels",
    "kiwisolver", "librt", "litserve", "mako", "markdown", "markdown_it", "markupsafe", "matplotlib", "mdurl", "mlflow",
    "mpl_toolkits", "mpmath", "multidict", "multipart", "multiprocess", "mypy", "mypy_extensions", "mypyc", "narwhals",
    "networkx", "nodeenv", "numpy", "nvidia", "opentelemetry", "package_readme", "packaging", "pandas", "pathspec",
    "pil", "platformdirs", "pluggy", "pre_commit", "pre_commit_hooks", "prettytable", "prometheus_client", "propcache",
    "psutil", "py", "pyarrow", "pyasn1", "pyasn1_modules", "pycparser", "pydantic", "pydantic_core",
    "pydantic_settings", "pygments", "pylab", "pyparsing", "pyrate_limiter", "pytest", "python_discovery",
    "python_multipart", "regex", "requests", "rich", "ruamel", "ruff", "safetensors", "schemathesis", "scipy",
    "setuptools", "shellingham", "sklearn", "skops", "smmap", "sniffio", "sortedcontainers", "sqlalchemy", "sqlparse",
    "starlette", "sympy", "taskipy", "tensorboard", "tensorboard_data_server", "testcontainers", "tests",
    "threadpoolctl", "tokenizers", "tomli", "tomlkit", "torch", "torchgen", "tqdm", "transformers", "triton",
    "truststore", "typer", "typing_extensions", "typing_inspection", "tzdata", "urllib3", "uvicorn", "uvloop",
    "virtualenv", "wandb", "watchfiles", "wcwidth", "websockets", "werkzeug", "wrapt", "xxhash", "yaml", "yarl", "zipp",
    "zmq",
})
# fmt: on
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
# A Hub repo id: "name" or "owner/name"; letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters.
HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$", re.ASCII)
LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")
REGISTRY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
FREE_TEXT = ("project_name", "description", "author_name")
TEMPLATE_ROOT = Path(__file__).resolve().parent  # cookiecutter loads this file from the template's root


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def slug(name: str) -> str:
    """`Zoë's Review Triage` → `zoes-review-triage`: ASCII letters and digits joined by single hyphens, starting
    with a letter, cut at a hyphen to at most MAX_SLUG characters. Empty when the name has no letter to start with."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().replace("'", "")
    words = re.findall(r"[a-z0-9]+", ascii_name)
    while words and not words[0][0].isalpha():
        if digitless := words[0].lstrip("0123456789"):
            words[0] = digitless
        else:
            words.pop(0)
    derived = ""
    for word in words:
        if len(derived) + len(word) + 1 > MAX_SLUG:
            break
        derived = f"{derived}-{word}" if derived else word
    return derived or (words[0][:MAX_SLUG] if words else "")


def unprintable(text: str) -> str | None:
    """The first character that has no place in a one-line answer (controls, line breaks, format characters)."""
    for character in text:
        if unicodedata.category(character)[0] == "C" or unicodedata.category(character) in ("Zl", "Zp"):
            return character
    return None


def problem_with_reference(value: str) -> str | None:
    """Why a model/dataset answer is neither a Hub id nor a local path, or None when it is fine."""
    if not value.strip():
        return "is empty; give a Hugging Face Hub id (owner/name) or a local path"
    if value.startswith(LOCAL_PATH_PREFIXES):
        return None
    if len(value) > 96 or not HUB_ID.match(value):
        return "is not a Hub id like 'owner/name' (letters, digits, - _ .) nor a local path starting with / ./ ../ or ~"
    return None


def problems(answers: dict[str, str]) -> list[str]:
    """Every problem with the answers, each phrased as one line naming the answer."""
    found = []
    for name, value in answers.items():
        if (character := unprintable(value)) is not None:
            found.append(f"{name} must be one line of printable text (it contains {character!r})")
    if found:
        return found  # the checks below assume printable text
    for name, allowed in CHOICES.items():
        if answers[name] not in allowed:
            found.append(f"{name} {answers[name]!r} is not one of: {', '.join(allowed)}")
    if not answers["project_name"].strip():
        found.append("project_name is empty")
    project_slug = answers["project_slug"]
    if not project_slug:
        found.append(f"project_slug: none can be derived from {answers['project_name']!r}; give project_slug=...")
    elif not SLUG.match(project_slug):
        found.append(
            f"project_slug {project_slug!r} must be lowercase letters and digits joined by single hyphens, "
            "starting with a letter"
        )
    elif len(project_slug) > MAX_SLUG:
        found.append(f"project_slug {project_slug!r} is longer than {MAX_SLUG} characters (it names the bucket)")
    package = answers["package_name"]
    if not PACKAGE.match(package):
        found.append(f"package_name {package!r} is not an importable name (lowercase letters, digits, _)")
    elif keyword.iskeyword(package) or keyword.issoftkeyword(package):
        found.append(f"package_name {package!r} is a Python keyword")
    elif package in sys.stdlib_module_names or package in TAKEN_NAMES:
        found.append(f"package_name {package!r} would shadow the module of the same name")
    if not EMAIL.match(answers["author_email"]):
        found.append(f"author_email {answers['author_email']!r} is not an e-mail address")
    if not PEP440.match(answers["version"]):
        found.append(f"version {answers['version']!r} is not a PEP 440 version like 0.1.0")
    for name in ("model_checkpoint", "dataset"):
        if why := problem_with_reference(answers[name]):
            found.append(f"{name} {answers[name]!r} {why}")
    if not REGISTRY.match(answers["image_registry"]):
        found.append(
            f"image_registry {answers['image_registry']!r} is not a registry path like ghcr.io/owner (lowercase)"
        )
    return found


def checked_answers(cookiecutter: dict[str, object]) -> str:
    """The filter behind `__checked`: stop the run at the first problem; a derived answer would only echo it."""
    answers = {name: str(value) for name, value in cookiecutter.items() if not name.startswith("_")}
    if found := problems(answers):
        fail(found[0])
    return "ok"


def template_origin(template: str) -> str:
    """Where the project came from, as cruft records it: a URL as given; a local template as the absolute path of
    its folder, which holds this file (cookiecutter renders from inside the template, so `.` would mislead)."""
    if re.match(r"^([a-z][a-z0-9+.-]*://|git@|gh:|gl:|bb:)", template):
        return template
    return str(TEMPLATE_ROOT)


def template_commit() -> str | None:
    """The commit of this template checkout (cookiecutter clones a remote template too), or None outside git."""
    try:
        command = ["git", "-C", str(TEMPLATE_ROOT), "rev-parse", "HEAD"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError:  # no git
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cruft_json(cookiecutter: dict[str, object]) -> str:
    """The generated `.cruft.json`: the template, its commit and the answers, so that `cruft update` (or cookiecutter
    with these answers) can apply a later version of the template to the project."""
    answers = {name: value for name, value in cookiecutter.items() if not name.startswith("_")}
    template = template_origin(str(cookiecutter["_template"]))
    record = {
        "template": template,
        "commit": template_commit(),
        "checkout": cookiecutter.get("_checkout"),
        "context": {"cookiecutter": {**answers, "_template": template}},
        "directory": None,
    }
    return json.dumps(record, indent=2, ensure_ascii=False)


class AnswerTemplate(Template):
    """cookiecutter renders answers given on the command line as templates: one that fails to render (an unknown
    variable, `{{ 1/0 }}`) ends the run with one error line instead of a traceback."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        try:
            return super().render(*args, **kwargs)
        except Exception as error:
            if self.name is not None:  # a template file of ours: a bug to see in full
                raise
            source = getattr(self.environment, "answer_source", "")
            fail(f"the answer {source!r} cannot be rendered ({error}): cookiecutter renders answers as Jinja")
            raise


class AnswerChecks(Extension):
    """The `checked_answers` and `slug` filters, and a clean error for an answer that is not a valid template."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["checked_answers"] = checked_answers
        environment.filters["slug"] = slug
        environment.filters["cruft_json"] = cruft_json
        # `tojson` writes non-ASCII text as is: its `\ud83d\ude00` escapes of one emoji are not valid TOML.
        environment.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
        environment.template_class = AnswerTemplate
        self.checking = False

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        # Template files have a name; answers (and cookiecutter.json's defaults) have none.
        if name is None and not self.checking and any(mark in source for mark in ("{{", "{%", "{#")):
            self.environment.answer_source = source  # type: ignore[attr-defined]  # for AnswerTemplate's message
            self.checking = True
            try:
                self.environment.parse(source)
            except TemplateSyntaxError as error:
                reason = (error.message or "syntax error").rstrip(".")
                fail(f"the answer {source!r} is not a valid Jinja template ({reason}): cookiecutter renders answers")
            finally:
                self.checking = False
        return source
