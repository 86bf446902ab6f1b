#!/usr/bin/env bash
# What a GPU session runs, in steps that each fit one device call (< 10 min), from the
# repository root on the GPU machine. Prepare the photos here first:
#     python -m scripts.carry_photos --set all      # data-carry/part-1.zip .. part-3.zip
# then, through the device tool (the machine keeps files between calls while it is warm):
#     bash scripts/gpu_session.sh speed    carry: data-carry/part-1.zip
#     bash scripts/gpu_session.sh unpack   carry: data-carry/part-2.zip
#     bash scripts/gpu_session.sh train    carry: data-carry/part-3.zip (+ a checkpoint to --init from)
# Each step first unpacks the parts that came with it (the last one holds manifest.csv).
# `speed` runs tests/test_cuda.py and measures training images/s (benchmarks/train_speed.py).
# `train` trains one run per entry of CONFIGS, side by side on the one GPU (a 3.6M-parameter
# VAE leaves an H200 room), each on every photo and validated on the catalogue val rows
# (experiments/README.md, "Retraining it on a GPU"). Each step writes to $OUT, which the device tool
# brings back (at most 8 files): per run NAME, NAME.pt (the weights of its best validation
# PSNR and their sampling distribution, no optimizer state) and NAME.tar.gz (config.json,
# metrics.json whose "validation" is those weights', loss.png, the last sample grid). Then, here:
#     mkdir -p runs/NAME && tar -xzf FETCHED/NAME.tar.gz -C runs/NAME && cp FETCHED/NAME.pt runs/NAME/checkpoint.pt
#     python -m training.prior runs/NAME --data ../shared/data/manifest.csv --filter white_background=1
#     python -m training.export runs/NAME --out model/default
# Settings come from the environment.
set -euo pipefail

OUT=${OUT:-runs/gpu}
PY=${PY:-python3}
CARRY=${CARRY:-data-carry}  # where the zipped parts arrive and are unpacked
DATA=${DATA:-$CARRY/manifest.csv}
TRAIN_SECONDS=${TRAIN_SECONDS:-480}  # two runs of 480 s fit one session's device time (measured, experiments/README.md)
SPEED_SECONDS=${SPEED_SECONDS:-10}
# Seconds for the CUDA tests and for train_speed: together under one device call's 600 s.
# train_speed writes into $OUT after every setting: what finished comes back.
TESTS_TIMEOUT=${TESTS_TIMEOUT:-200}
SPEED_TIMEOUT=${SPEED_TIMEOUT:-360}
SPEED_TESTS=${SPEED_TESTS:-1}  # 0: skip tests/test_cuda.py (a second speed call on the same machine)
BATCH=${BATCH:-256}
SPEED_BATCHES=${SPEED_BATCHES:-$BATCH}  # e.g. "1024 2048"; each setting compiled costs ~25 s
# e.g. "--fused --variants model padded-ends subpixel+s2d-ends --profile": also time AdamW's
# fused kernel and the same network computed other ways, with a kernel table per setting
# (benchmarks/train_speed.py)
SPEED_FLAGS=${SPEED_FLAGS:-}
SPEED_COMPILE=${SPEED_COMPILE-default}  # the compile modes timed beside eager; "" for eager only
# Then, in the same call, the fastest setting's variant again at THEN_BATCHES (e.g. 2048) with
# THEN_FLAGS (e.g. "--fused"), into $OUT/then: no person has to read the winner between two calls
# while the machine idles towards its release.
THEN_BATCHES=${THEN_BATCHES:-}
THEN_FLAGS=${THEN_FLAGS:-}
THEN_TIMEOUT=${THEN_TIMEOUT:-200}
# At batch 256 torch.compile was slower on the H200 (14,327 images/s against 17,277 eager;
# benchmarks/results/train_speed_cuda_2026-11-29.json): training runs eager unless COMPILE=--compile.
COMPILE=${COMPILE:-}
# One run per line, "NAME flags...": flags add to or override the recipe (argparse keeps a
# flag's last value). At most 3 runs: 2 files each + session.log fit the 8 that come back.
CONFIGS=${CONFIGS:-"scratch --beta 0.02"}
RUNS=${RUNS:-runs}  # checkpoints stay on the machine; only what experiments/README.md needs comes back
SAMPLE_EVERY=${SAMPLE_EVERY:-50}  # epochs between validations: an epoch is well under a second there

mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1

unpack() {
  local zip
  for zip in "$CARRY"/part-*.zip; do
    [ -e "$zip" ] || continue
    "$PY" -m zipfile -e "$zip" "$CARRY"
  done
}

speed() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  # The CUDA paths CI cannot run (no host-device sync in a step, eager or compiled; bf16 + compile;
  # GPU -> CPU export).
  if [ "$SPEED_TESTS" != 0 ]; then
    timeout "$TESTS_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py || echo "CUDA tests FAILED: see above"
  fi
  local compile=()
  # shellcheck disable=SC2086
  [ -z "$SPEED_COMPILE" ] || compile=(--compile $SPEED_COMPILE)
  # shellcheck disable=SC2086
  time_speed "$SPEED_TIMEOUT" "$OUT" --batch-sizes $SPEED_BATCHES "${compile[@]}" $SPEED_FLAGS
  [ -n "$THEN_BATCHES" ] || return 0
  local results winner
  results=$(LC_ALL=C ls "$OUT"/train_speed_*.json 2>/dev/null | head -n 1 || true)
  if [ -z "$results" ] || ! winner=$("$PY" -m benchmarks.train_speed --fastest-in "$results"); then
    echo "no fastest variant to take further"
    return 0
  fi
  echo "fastest variant: $winner; now at batch $THEN_BATCHES"
  # shellcheck disable=SC2086
  time_speed "$THEN_TIMEOUT" "$OUT/then" --batch-sizes $THEN_BATCHES "${compile[@]}" --variants "$winner" $THEN_FLAGS
}

time_speed() {  # LIMIT FOLDER FLAGS...: benchmarks/train_speed.py for at most LIMIT seconds
  local limit=$1 folder=$2
  shift 2
  # Straight into $OUT, never the committed results: an old file must not come back as a new one.
  # It writes after every setting, so what finished is there even if the limit stops it.
  # TEARDOWN_CUPTI: after each --profile table the CUDA profiler detaches, or it slows every later setting.
  TEARDOWN_CUPTI=1 timeout "$limit" "$PY" -m benchmarks.train_speed --out "$folder" --seconds "$SPEED_SECONDS" "$@" \
    || echo "train_speed stopped early (exit $?): the settings it finished are in $folder"
}

bring_back() {  # NAME: the best weights without optimizer state, and the reports
  local name=$1 run="$RUNS/$1"
  # (Called as `bring_back NAME || ...`, where bash ignores `set -e`: each step checks itself.)
  "$PY" - "$run" "$OUT/$name.pt" <<'PY' || return 1
import json, sys, torch
from pathlib import Path
from training import checkpoint
run, dest = Path(sys.argv[1]), sys.argv[2]
state = checkpoint.with_best(checkpoint.load(run / "checkpoint.pt"))
# final_step: which step metrics.json describes, so export knows its numbers are of these weights' run
keep = ("model", "latent_prior", "epoch", "step", "final_step", "vae_config", "loss_config", "elapsed", "history")
torch.save({k: state[k] for k in keep}, dest)
metrics = json.loads((run / "metrics.json").read_text())
best = {**checkpoint.best_metrics(metrics, state["best"]), "final_validation": metrics["validation"]}
(run / "metrics.json").write_text(json.dumps(best, indent=2))
PY
  cp "$(LC_ALL=C ls "$run"/samples/*.png | tail -1)" "$run/samples.png" || return 1  # C: byte order, as the frames are named for
  tar -czf "$OUT/$name.tar.gz" -C "$run" config.json metrics.json loss.png samples.png
}

train() {
  local pids=() names=() name flags
  mkdir -p "$RUNS"
  while read -r name flags; do
    [ -n "$name" ] || continue
    rm -rf "${RUNS:?}/$name"
    echo "== $name: ${TRAIN_SECONDS}s on every photo of $DATA: $flags"
    # shellcheck disable=SC2086
    timeout $((TRAIN_SECONDS + 300)) "$PY" -m training.train --data "$DATA" --val-filter white_background=1 \
      --out "$RUNS/$name" --max-time "$TRAIN_SECONDS" --epochs 1000000 --batch-size "$BATCH" $COMPILE \
      --sample-every "$SAMPLE_EVERY" --checkpoint-interval 60 $flags > "$RUNS/$name.log" 2>&1 &
    pids+=($!) names+=("$name")
  done <<< "$CONFIGS"
  # Stopped (Ctrl-C, the device call's limit), stop the runs too: each sits in timeout's own
  # process group, and a leftover would hold the GPU and write into a folder the next call clears.
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
  local i failed=0
  for i in "${!pids[@]}"; do
    name=${names[$i]}
    # One run failing (or its bring-back) must not cost the others theirs: no `set -e` exit here.
    if wait "${pids[$i]}"; then
      bring_back "$name" || { echo "== $name: bringing back its results FAILED"; failed=1; }
    else
      echo "== $name FAILED"; failed=1
    fi
    # The progress bar's carriage returns would bury the validation lines.
    tr '\r' '\n' < "$RUNS/$name.log" | grep -av "step/s\|^$" | tail -40 | sed "s/^/[$name] /" || true
  done
  trap - EXIT INT TERM
  ls -la "$OUT"
  return $failed
}

case "${1:-}" in
  speed) unpack; speed ;;
  unpack) unpack ;;
  train) unpack; train ;;
  *) echo "usage: bash scripts/gpu_session.sh speed|unpack|train" >&2; exit 2 ;;
esac
