"""Which photos to train on: the catalogue set alone, every photo, or every photo then the
catalogue set (pre-training + fine-tuning). All three report on the same catalogue val rows.

    python -m experiments.training_sets                       # 64 px: 600 s, 600 s, 600 + 200 s
    python -m experiments.training_sets --runs runs/pilots    # reuse runs already finished there

Each recipe is a real `training.train` run with a wall-clock budget. A run folder that already
holds metrics.json is reused, not retrained. Writes experiments/results/training_sets_<px>px_<device>.json
and experiments/figures/training_sets_<px>px.png (each run's last grid: validation photos, reconstructions, samples).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from experiments.common import FIGURES, MANIFEST, labelled_grids, save
from training.train import main as train


def recipes(data: str, size: int, seconds: float, finetune_seconds: float) -> dict[str, list[str]]:
    common = ["--data", data, "--batch-size", "32", "--epochs", "100000", "--beta", "0.5",  # as measured:
              "--ema", "0", "--zoom", "0", "--shift", "0"]  # the trainer's defaults then
    return {
        "cat": [*common, "--filter", "white_background=1", "--image-size", str(size), "--max-time", str(seconds),
                "--sample-every", "20"],
        "all": [*common, "--val-filter", "white_background=1", "--image-size", str(size),
                "--max-time", str(seconds), "--sample-every", "2"],
        # --init takes the architecture (so the image size) from the 'all' run
        "ft": [*common, "--filter", "white_background=1", "--init", "{runs}/all", "--lr", "3e-4", "--kl-warmup", "0",
               "--max-time", str(finetune_seconds), "--sample-every", "20"],
    }


LABELS = {
    "cat": "catalogue set only (841 photos)",
    "all": "every photo (8,595), validated on the catalogue val rows",
    "ft": "every photo, then fine-tuned on the catalogue set",
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.training_sets", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(MANIFEST))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=600.0, help="budget of the 'cat' and 'all' runs")
    p.add_argument("--finetune-seconds", type=float, default=200.0, help="budget of the fine-tuning after 'all'")
    p.add_argument("--runs", help="folder for the runs (default: a new temporary one)")
    args = p.parse_args(argv)
    runs = Path(args.runs or tempfile.mkdtemp(prefix="training-sets-"))

    results = {}
    for name, flags in recipes(args.data, args.image_size, args.seconds, args.finetune_seconds).items():
        run = runs / name
        if not (run / "metrics.json").exists():
            train([*(f.format(runs=runs) for f in flags), "--out", str(run)])
        metrics = json.loads((run / "metrics.json").read_text())
        v, t = metrics["validation"], metrics["training"]
        results[name] = {"recipe": LABELS[name], "config": json.loads((run / "config.json").read_text()),
                         "val_psnr": round(v["psnr"], 2), "val_ssim": round(v["ssim"], 3), "val_kl": round(v["kl"], 1),
                         "val_images": v["images"], "train_images": t["images"], "epochs": t["epochs"],
                         "seconds": t["seconds"]}
        print(f"{LABELS[name]:60s} PSNR {v['psnr']:6.2f} dB  SSIM {v['ssim']:.3f}  KL {v['kl']:6.1f}  ({run})")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = save(f"training_sets_{args.image_size}px_{device}", {"image_size": args.image_size, "recipes": results})
    labelled_grids([(LABELS[n], runs / n) for n in results], FIGURES / f"training_sets_{args.image_size}px.png")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
