#!/usr/bin/env bash
# Run the training module under `accelerate launch` on one node of a SkyPilot cluster (sky_task.yaml's `run`).
# Every node runs this script; SkyPilot's variables say which node it is and how many there are. Outside SkyPilot,
# set them by hand (unset ones mean a single node), e.g. two CPU processes on this machine:
#   SKYPILOT_NUM_GPUS_PER_NODE=0 PROCESSES_PER_NODE=2 bash scripts/sky_run.sh --training.num_train_epochs 1
# Arguments are settings flags (--section.field VALUE) for the training module.
#   SKYPILOT_NUM_NODES           nodes in the job (default 1)
#   SKYPILOT_NODE_RANK           this node's rank, 0 on the head node (default 0)
#   SKYPILOT_NODE_IPS            node IPs, one a line, head node first (default 127.0.0.1)
#   SKYPILOT_NUM_GPUS_PER_NODE   GPUs on each node (default: what torch sees here)
#   PROCESSES_PER_NODE           processes on each node (default: one per GPU, or 1 without a GPU)
#   MAIN_PROCESS_PORT            the head node's rendezvous port (default 29500)
#   PROJECT_DIR                  the project root, with configs/settings.yaml (default: this script's parent folder)
#   PYTHON                       the Python with the project installed (default: see below)
#   TRACKING_REQUIREMENTS        the trackers' pinned list (default: the cloud image's /opt/tracking-requirements.txt)
set -euo pipefail

project_dir=${PROJECT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$project_dir"
# The project's Python: $PYTHON, else this checkout's .venv, else the image's venv ($VIRTUAL_ENV), else python3.
python=${PYTHON:-}
if [[ -z $python && -x .venv/bin/python ]]; then python=.venv/bin/python; fi
if [[ -z $python ]]; then python=${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/}python3; fi

for arg in "$@"; do # the flags are the training module's: so is the help
  if [[ $arg == -h || $arg == --help ]]; then exec "$python" -m {{ cookiecutter.package_name }}.train "$@"; fi
done
# Settings are checked here, once, because accelerate does not pass a child's exit code through: a bad value is one
# line on stderr and exit code 2 before any process starts. The same call names the experiment tracker
# training.report_to asks for when this Python cannot import it: the `tracking` extra is not in the cloud image, which
# holds the serving image's packages exactly, so the job installs it here first, at the versions uv.lock pins.
missing_tracker=$("$python" -c 'import sys
from {{ cookiecutter.package_name }}.settings import settings_or_exit, tracker_installed
tracker = settings_or_exit(sys.argv[1:]).training.report_to
print("" if tracker_installed(tracker) else tracker)' "$@")
trackers=${TRACKING_REQUIREMENTS:-/opt/tracking-requirements.txt}
if [[ -n $missing_tracker && -f $trackers ]]; then
  echo "sky_run.sh: installing the experiment trackers for training.report_to $missing_tracker ($trackers)" >&2
  uv pip install --quiet --python "$python" --requirements "$trackers"
fi

nodes=${SKYPILOT_NUM_NODES:-1}
rank=${SKYPILOT_NODE_RANK:-0}
head_ip=$(printf '%s\n' "${SKYPILOT_NODE_IPS:-127.0.0.1}" | head -n 1)
gpus=${SKYPILOT_NUM_GPUS_PER_NODE:-$("$python" -c 'import torch; print(torch.cuda.device_count())')}
per_node=${PROCESSES_PER_NODE:-$((gpus > 0 ? gpus : 1))}
total=$((nodes * per_node))

launch=(--num_machines "$nodes" --machine_rank "$rank" --num_processes "$total")
launch+=(--main_process_ip "$head_ip" --main_process_port "${MAIN_PROCESS_PORT:-29500}")
launch+=(--dynamo_backend no --mixed_precision no --quiet) # the Trainer applies training.mixed_precision itself
# More than one process: torchrun starts them (NCCL on GPUs; on CPU-only nodes the Trainer forms a gloo group).
# accelerate's --cpu would start only one process whatever --num_processes says.
if ((total > 1)); then launch+=(--multi_gpu); fi

echo "sky_run.sh: node $rank of $nodes, $per_node process(es) here, $total in all, head $head_ip" >&2
exec "$python" -m accelerate.commands.launch "${launch[@]}" -m {{ cookiecutter.package_name }}.train "$@"
