#!/usr/bin/env bash
# Set up a fresh machine (idempotent; fast when nothing changed):
#   - Debian's Chromium for the browser test (never a downloaded browser)
#   - .venv: Python 3.11 with requirements-dev.txt (training, tests, local API)
#   - .venv312: Python 3.12 with pytest only, to run the handler tests against the
#     packaged Lambda zip the way the python3.12 runtime will (no torch)
#   - node_modules: npm ci (osls, serverless-offline, serverless-python-requirements, jquery)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing Debian's chromium"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  # Another apt or dpkg (unattended-upgrades on a fresh machine, say) may hold the lock: wait for it,
  # up to APT_LOCK_TIMEOUT seconds, instead of failing at once.
  APT=(apt-get -o "DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT:-300}")
  $SUDO "${APT[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO "${APT[@]}" install -y -qq chromium fonts-dejavu-core >/dev/null
fi

python311=${PYTHON:-python3.11}
stamp=".venv/.installed-$(cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv (Python 3.11) from requirements-dev.txt"
  "$python311" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The Lambda runs Python 3.12. pyenv's shim named python3.12 may exist without that
# version being active, so look for a real interpreter.
python312=${PYTHON312:-}
if [ -z "$python312" ]; then
  for candidate in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if [ -x "$candidate" ]; then python312=$candidate; break; fi
  done
fi
if [ -n "$python312" ] && [ ! -f .venv312/.installed-pytest-9.2.0 ]; then
  echo "setup: creating .venv312 (Python 3.12, the Lambda's version)"
  "$python312" -m venv .venv312
  .venv312/bin/python -m pip install -q --disable-pip-version-check pytest==9.2.0
  touch .venv312/.installed-pytest-9.2.0
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
