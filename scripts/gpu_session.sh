#!/usr/bin/env bash
# What a GPU session runs, in steps that each fit one device call (< 10 min), from the
# repository root on the GPU machine. Prepare the photos here first:
#     python -m scripts.carry_photos --set all      # data-carry/part-1..3 + manifest.csv
# then, through the device tool (the machine keeps files between calls while it is warm):
#     bash scripts/gpu_session.sh speed    carry: data-carry/part-1
#     true                                 carry: data-carry/part-2
#     bash scripts/gpu_session.sh train    carry: data-carry/part-3, data-carry/manifest.csv
# `speed` runs tests/test_cuda.py and measures training images/s (benchmarks/train_speed.py);
# `train` pre-trains on every photo (validated on the catalogue val rows), then fine-tunes on
# the catalogue set, whose photos the sampling distribution is then fitted on. Each step writes
# to $OUT, which the device tool brings back (at most 8 files): the weights without optimizer
# state, with the fitted distribution, and the reports. Then, here:
#     python -m training.export FETCHED/run --out model/default
# copy train_speed_cuda.json to benchmarks/results/ and loss.png to docs/, and redraw the
# README's figures with benchmarks.compare_runs and benchmarks.sample_quality.
# Settings come from the environment.
# Budget: 15 min of device time per session, start-up included. Estimated, not yet measured
# (no GPU has run this): about 3 min start, 3 min `speed`, 7 min `train` with these defaults.
set -euo pipefail

OUT=${OUT:-runs/gpu}
PY=${PY:-python3}
DATA=${DATA:-data-carry/manifest.csv}
PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-200}  # 0: train on the catalogue set only
FINETUNE_SECONDS=${FINETUNE_SECONDS:-60}
SPEED_SECONDS=${SPEED_SECONDS:-10}
BATCH=${BATCH:-256}
SPEED_BATCHES=${SPEED_BATCHES:-$BATCH}  # e.g. "256 1024"; each size costs a compile
COMPILE=${COMPILE---compile}  # COMPILE= (empty) for a CPU smoke run
# TRAIN_FLAGS adds to or overrides the recipe (argparse keeps the last value of a flag).
TRAIN_FLAGS=${TRAIN_FLAGS:-}
RUN=${RUN:-runs/gpu-run}  # checkpoints stay on the machine; only what the README needs comes back

mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1

speed() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  # The CUDA paths CI cannot run (no host-device sync in a step; bf16 + compile; GPU -> CPU export).
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py || echo "CUDA tests FAILED: see above"
  timeout 400 "$PY" -m benchmarks.train_speed --batch-sizes $SPEED_BATCHES --compile --seconds "$SPEED_SECONDS"
  cp benchmarks/results/train_speed_cuda.json "$OUT/"
}

train() {
  local init=()
  rm -rf "$RUN" "$RUN-all"
  # Validation and grids every 50 (then 200) epochs: epochs last well under a second there.
  # shellcheck disable=SC2086
  if [ "$PRETRAIN_SECONDS" != 0 ]; then
    echo "== pre-training for ${PRETRAIN_SECONDS}s on every photo of $DATA"
    timeout $((PRETRAIN_SECONDS + 240)) "$PY" -m training.train --data "$DATA" --val-filter white_background=1 \
      --out "$RUN-all" --max-time "$PRETRAIN_SECONDS" --epochs 1000000 --batch-size "$BATCH" $COMPILE \
      --sample-every 50 --checkpoint-interval 60 $TRAIN_FLAGS
    init=(--init "$RUN-all" --lr 3e-4 --kl-warmup 0)
  fi
  echo "== training for ${FINETUNE_SECONDS}s on the catalogue photos of $DATA"
  # shellcheck disable=SC2086
  timeout $((FINETUNE_SECONDS + 240)) "$PY" -m training.train --data "$DATA" --filter white_background=1 \
    --out "$RUN" --max-time "$FINETUNE_SECONDS" --epochs 1000000 --batch-size "$BATCH" $COMPILE \
    --sample-every 200 --checkpoint-interval 60 "${init[@]}" $TRAIN_FLAGS

  echo "== bring back"
  # The weights without the optimizer state (export runs here, on the service's CPU torch,
  # with its parity check), and the reports.
  mkdir -p "$OUT/run"
  "$PY" - "$RUN/checkpoint.pt" "$OUT/run/checkpoint.pt" <<'PY'
import sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
keep = ("model", "vae_config", "loss_config", "latent_prior", "epoch", "step", "elapsed", "history")
torch.save({k: state[k] for k in keep}, sys.argv[2])
PY
  cp "$RUN"/config.json "$RUN"/metrics.json "$RUN"/loss.png "$OUT/run/"
  cp "$(ls "$RUN"/samples/*.png | tail -1)" "$OUT/run/samples.png"
  if [ -f "$RUN-all/metrics.json" ]; then cp "$RUN-all/metrics.json" "$OUT/run/pretrain_metrics.json"; fi
  ls -la "$OUT" "$OUT/run"
}

case "${1:-}" in
  speed) speed ;;
  train) train ;;
  *) echo "usage: bash scripts/gpu_session.sh speed|train" >&2; exit 2 ;;
esac
