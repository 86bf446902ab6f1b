"""Compare training recipes on the same data and the same time (or epoch) budget.

    python -m experiments.loss_variants                                  # 64 px, 300 s each, on this machine
    python -m experiments.loss_variants --image-size 128 --seconds 200   # the issue's GPU setting
    python -m experiments.loss_variants --epochs 100 --only default wider deeper latent   # architectures

Each variant is a real `training.train` run on the catalogue set of ../shared/data
(white_background=1, the manifest's fixed validation split) with a wall-clock budget
(--max-time), or with a number of epochs (--epochs: a fair budget between networks of
different speeds when the question is what a GPU's budget would give); the table reports
validation PSNR/SSIM/KL and the mean-image baseline. Writes
experiments/results/loss_variants_<device>.json (or ..._<N>epochs.json).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import torch

from experiments.common import MANIFEST, RESULTS, labelled_grids, save
from training.train import main as train

# Every variant starts from the trainer's defaults when these were measured: beta 0.5, no moving
# average of the weights, no zoom or shift. A variant's own flags come later and win.
BASE_FLAGS = ["--beta", "0.5", "--ema", "0", "--zoom", "0", "--shift", "0"]
VARIANTS = {
    "default (beta 0.5)": [],
    "beta 0.02 (per-image KL, warm-up over 20%)": ["--beta", "0.02"],
    "beta 0.1": ["--beta", "0.1"],
    "beta 0.3": ["--beta", "0.3"],
    "original project's loss (mean MSE + KL/(B*C*H*W))": ["--kl-norm", "original", "--kl-warmup", "0"],
    "default + L1 + SSIM terms": ["--l1-weight", "0.5", "--ssim-weight", "0.2"],
    "default + free bits (0.1 nats/dim)": ["--free-bits", "0.1"],
    "wider (base 32, max 256 channels)": ["--base-channels", "32", "--max-channels", "256"],
    "deeper (2 residual blocks per stage)": ["--res-blocks", "2"],
    "latent 512": ["--latent-dim", "512"],
    "latent 128": ["--latent-dim", "128"],
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.loss_variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(MANIFEST))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=300.0, help="training budget per variant")
    p.add_argument("--epochs", type=int, help="train each variant this many epochs instead (no time limit)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--only", nargs="*", help="substrings of the variants to run")
    p.add_argument("--figure", help="also write this PNG: each variant's last grid under its name")
    args = p.parse_args(argv)

    budget = ["--epochs", str(args.epochs)] if args.epochs else ["--max-time", str(args.seconds), "--epochs", "100000"]
    setting = {"image_size": args.image_size, "batch_size": args.batch_size,
               **({"epochs_each": args.epochs} if args.epochs else {"seconds_each": args.seconds})}
    results, runs = {}, []
    for name, flags in VARIANTS.items():
        if args.only and not any(s in name for s in args.only):
            continue
        run = Path(tempfile.mkdtemp(prefix="variant-")) / "run"
        runs.append((name, run))
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar; the summary line is on stdout
            metrics = train(["--data", args.data, "--filter", "white_background=1", "--out", str(run),
                             "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                             *budget, "--sample-every", "100000",
                             "--checkpoint-interval", "1e9", *BASE_FLAGS, *flags])
        v, t = metrics["validation"], metrics["training"]
        results[name] = {"flags": flags, "val_psnr": round(v["psnr"], 2), "val_ssim": round(v["ssim"], 3),
                         "val_kl": round(v["kl"], 1), "mean_image_psnr": round(v["mean_image_psnr"], 2),
                         "epochs": t["epochs"], "seconds": t["seconds"], "images_per_second": t["images_per_second"],
                         "parameters": metrics["model"]["parameters"]}
        print(f"{name:55s} PSNR {v['psnr']:6.2f} dB  SSIM {v['ssim']:.3f}  KL {v['kl']:7.1f}  ({t['epochs']} epochs; {run})",
              flush=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # With --only, keep the other variants' earlier results of the same setting.
    name = f"loss_variants_{device}" + (f"_{args.epochs}epochs" if args.epochs else "")
    earlier = RESULTS / f"{name}.json"
    if args.only and earlier.exists():
        old = json.loads(earlier.read_text())
        if all(old.get(k) == v for k, v in setting.items()):
            results = {**old["variants"], **results}
    path = save(name, {**setting, "variants": results})
    if args.figure:
        labelled_grids(runs, Path(args.figure))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
