#!/usr/bin/env bash
# The GPU runs of the project, and their rehearsal on a CPU: scripts/gpu_runs.py
# holds the stages (commands, expected seconds, needs, shipped files); --help
# says how to call it. Kept so that `bash scripts/gpu_runs.sh ...` works as before.
cd "$(dirname "$0")/.." || exit 2
exec "${PYTHON:-python3}" scripts/gpu_runs.py "$@"
