#!/usr/bin/env bash
# Move requirements.lock forward: install byllm-distill with every extra into a scratch
# virtual environment without constraints (today's newest versions that satisfy
# pyproject.toml), then write what was installed. Review the diff, run the tests, commit.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-$(.venv/bin/python -c 'import sys; print(sys._base_executable)')}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$py" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --upgrade pip
"$scratch/venv/bin/python" -m pip install --progress-bar off ".[train,serve,eval,dev,team]"
{
    echo "# Versions scripts/setup.sh installs (pip constraints). Refresh: bash scripts/refresh_lock.sh"
    "$scratch/venv/bin/python" -m pip freeze | grep -v '^byllm-distill\|^-e \|^# Editable'
} > requirements.lock
echo "refresh_lock: wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages); git diff requirements.lock"
