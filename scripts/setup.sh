#!/usr/bin/env bash
# Set up byllm-distill for development or a demo: a Python 3.12 virtual environment in
# .venv with the package installed editable and every extra (training, serving,
# evaluation, tests, team mode: the PostgreSQL driver and s3fs), plus the system programs
# some tests drive.
# Idempotent: re-running is quick unless pyproject.toml or requirements.lock changed.
# Heavy wheels (torch ~5 GB, llama-cpp-python built once in ~5 min) come from pip's cache
# after the first install on a machine.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    for candidate in "${PYTHON:-}" python3.12 python3 "$(command -v pyenv >/dev/null && pyenv which python3.12 2>/dev/null)"; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 12))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "setup: Python 3.12+ is required (jaclang and byLLM need it). Install it (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    py=$(find_python)
    echo "setup: creating .venv with $($py --version)"
    "$py" -m venv .venv
fi

stamp=.venv/.byllm-distill-setup
want=$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "setup: installing byllm-distill and its extras into .venv (first time: several minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    # requirements.lock pins every dependency (pip constraints), so two fresh clones get the
    # same versions; scripts/refresh_lock.sh moves them forward.
    .venv/bin/python -m pip install --progress-bar off -c requirements.lock \
        -e ".[train,serve,eval,dev,team]"
    echo "$want" > "$stamp"
fi
# The rating page's browser test drives Debian's Chromium (no browser download).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian's chromium and chromium-driver (for the browser test)"
        apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "setup: note: chromium + chromium-driver are not installed; the browser test will be skipped (sudo apt-get install chromium chromium-driver)"
    fi
fi
# Store tests run on SQLite and on a throwaway PostgreSQL server they start themselves
# (tests/postgres_server.py); they need the server programs, not a running server.
have_postgres() {
    local dirs=()
    command -v pg_config >/dev/null && dirs+=("$(pg_config --bindir)")
    dirs+=(/usr/lib/postgresql/*/bin)
    for dir in "${dirs[@]}"; do
        [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ] && return 0
    done
    return 1
}
if ! have_postgres; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian's postgresql (for the PostgreSQL store tests)"
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    else
        echo "setup: note: PostgreSQL's server programs (initdb, pg_ctl) are not installed; the PostgreSQL store tests will be skipped (sudo apt-get install postgresql)"
    fi
fi
# llama.cpp's HF->GGUF converter ships only in the llama-cpp-python sdist: fetch it once
# from PyPI into the user cache (no model hub involved). Quick when already prepared.
.venv/bin/python -m byllm_distill.training.export --prepare
echo "setup: ready ($(.venv/bin/python --version), $(du -sh .venv 2>/dev/null | cut -f1) in .venv)"
