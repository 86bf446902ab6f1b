#!/usr/bin/env bash
# The README's second command (and what CI runs): set up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export SLS_PYTHON="$PWD/.venv/bin/python"  # pip for serverless-python-requirements
exec .venv/bin/python -m pytest "$@"
