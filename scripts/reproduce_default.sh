#!/usr/bin/env bash
# Reproduce the default model from its recipe, into folders of your own (model/default is left alone):
#
#   scripts/reproduce_default.sh [RUN] [RECIPE]      # default: runs/default, recipes/default.py
#
# train (RUN) -> sharpen (RUN-sharp) -> fit the sampling distribution -> export (RUN-model). Serve the result
# with `scripts/run-local.sh --model-dir RUN-model`. Time: see the recipe (about 8 minutes on a GPU,
# about 8 hours on a 2-core CPU). Interrupted? Run it again: training resumes from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default}
RECIPE=${2:-recipes/default.py}
PY=${PY:-.venv/bin/python}

# The other stages' flags, from the recipe's names in capitals.
stage_args() { "$PY" -c 'import runpy, shlex, sys; v = runpy.run_path(sys.argv[1]).get(sys.argv[2]); print("" if v is None else shlex.join(v))' "$RECIPE" "$1"; }

# 1. train
if [ -f "$RUN/checkpoint.pt" ]; then
    "$PY" -m training.train --out "$RUN" --resume
else
    "$PY" -m training.train --recipe "$RECIPE" --out "$RUN"
fi

# 2. sharpen: the decoder learns to draw details (training.sharpen; encoder and codes kept)
eval "set -- $(stage_args SHARPEN_ARGS)"
if [ -f "$RUN-sharp/checkpoint.pt" ]; then
    "$PY" -m training.sharpen --out "$RUN-sharp" --resume
else
    "$PY" -m training.sharpen --init "$RUN" --out "$RUN-sharp" "$@"
fi

# 3. the sampling distribution, fitted on the photos the recipe names
eval "set -- $(stage_args PRIOR_ARGS)"
"$PY" -m training.prior "$RUN-sharp" "$@"

# 4. export to a folder of your own
"$PY" -m training.export "$RUN-sharp" --out "$RUN-model"
echo "serve it: scripts/run-local.sh --model-dir $RUN-model"
