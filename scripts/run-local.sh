#!/usr/bin/env bash
# The README's first command: set up, then serve the API (serverless-offline on the
# bundled model) and the web page on this machine. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m scripts.local_stack "$@"
