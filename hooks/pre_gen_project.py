"""Reject bad cookiecutter answers before anything is written.

Each check prints one line naming the answer and what is wrong with it, and exits non-zero; cookiecutter then
removes the half-made project directory, so a rejected bake leaves nothing behind.
"""

import keyword
import re
import sys

ANSWERS = {
    "project_name": {{ cookiecutter.project_name | tojson }},
    "project_slug": {{ cookiecutter.project_slug | tojson }},
    "package_name": {{ cookiecutter.package_name | tojson }},
    "description": {{ cookiecutter.description | tojson }},
    "author_name": {{ cookiecutter.author_name | tojson }},
    "author_email": {{ cookiecutter.author_email | tojson }},
    "version": {{ cookiecutter.version | tojson }},
    "model_checkpoint": {{ cookiecutter.model_checkpoint | tojson }},
    "dataset": {{ cookiecutter.dataset | tojson }},
    "default_cloud": {{ cookiecutter.default_cloud | tojson }},
    "python_version": {{ cookiecutter.python_version | tojson }},
    "license": {{ cookiecutter.license | tojson }},
    "image_registry": {{ cookiecutter.image_registry | tojson }},
    "include_github_actions": {{ cookiecutter.include_github_actions | tojson }},
}

CHOICES = {
    "default_cloud": ("gcp", "aws", "azure", "kubernetes"),
    "python_version": ("3.11", "3.12", "3.13"),
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "Proprietary"),
    "include_github_actions": ("y", "n"),
}
SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE = re.compile(r"^[a-z][a-z0-9_]*$")
# Names the generated code imports: a package called like one of them would shadow it.
TAKEN_NAMES = {"accelerate", "datasets", "litserve", "pydantic", "taskipy", "tests", "torch", "transformers", "yaml"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
# A Hub repo id: "name" or "owner/name"; letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters.
HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")
REGISTRY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


def problem_with_reference(value: str) -> str | None:
    """Why a model/dataset answer is neither a Hub id nor a local path, or None when it is fine."""
    if not value.strip():
        return "is empty; give a Hugging Face Hub id (owner/name) or a local path"
    if value.startswith(LOCAL_PATH_PREFIXES):
        return "contains a line break" if "\n" in value else None
    if len(value) > 96 or not HUB_ID.match(value):
        return "is not a Hub id like 'owner/name' (letters, digits, - _ .) nor a local path starting with / ./ ../ or ~"
    return None


def problems(answers: dict[str, str]) -> list[str]:
    found = []
    for name, allowed in CHOICES.items():
        if answers[name] not in allowed:
            found.append(f"{name} {answers[name]!r} is not one of: {', '.join(allowed)}")
    if not answers["project_name"].strip():
        found.append("project_name is empty")
    if not SLUG.match(answers["project_slug"]):
        found.append(
            f"project_slug {answers['project_slug']!r} must be lowercase letters and digits joined by single hyphens"
        )
    package = answers["package_name"]
    if not PACKAGE.match(package):
        found.append(f"package_name {package!r} is not an importable name (lowercase letters, digits, _)")
    elif keyword.iskeyword(package) or keyword.issoftkeyword(package):
        found.append(f"package_name {package!r} is a Python keyword")
    elif package in sys.stdlib_module_names or package in TAKEN_NAMES:
        found.append(f"package_name {package!r} would shadow the module of the same name")
    for name in ("description", "author_name"):
        if "\n" in answers[name]:
            found.append(f"{name} must fit on one line")
    if not EMAIL.match(answers["author_email"]):
        found.append(f"author_email {answers['author_email']!r} is not an e-mail address")
    if not PEP440.match(answers["version"]):
        found.append(f"version {answers['version']!r} is not a PEP 440 version like 0.1.0")
    for name in ("model_checkpoint", "dataset"):
        why = problem_with_reference(answers[name])
        if why:
            found.append(f"{name} {answers[name]!r} {why}")
    if not REGISTRY.match(answers["image_registry"]):
        found.append(
            f"image_registry {answers['image_registry']!r} is not a registry path like ghcr.io/owner (lowercase)"
        )
    return found


if __name__ == "__main__":
    found = problems(ANSWERS)
    if found:
        # One line: the first problem; a derived answer (package_name from project_slug) would only echo it.
        print(f"error: {found[0]}", file=sys.stderr)
        sys.exit(1)
