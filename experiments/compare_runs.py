"""Put finished training runs side by side: their validation metrics, and one figure in which
each run reconstructs the same validation photos and decodes the same draws u ~ N(0, I) (at
temperature 1 and 0.7) through its sampling distribution (the fitted Gaussian in its
checkpoint, else N(0, I)), so differences come from the models alone.

    python -m experiments.compare_runs runs/cpu128b runs/ft128 --name default_vs_two_stage_128px

Writes experiments/results/<name>.json and experiments/figures/<name>.png. Runs must share image and latent size.
The default model's figure (README, "The default model") is this script's too, written beside the product's
measurements:  python -m experiments.compare_runs runs/default --name default_model_128px --headline
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import RESULTS as PRODUCT_RESULTS
from experiments.common import MANIFEST, ROOT, save, save_grid
from training import prior, report
from training.data import load_dataset
from training.export import load_vae


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.compare_runs", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (each holds checkpoint.pt and metrics.json)")
    p.add_argument("--name", required=True, help="name of the result JSON and of the figure")
    p.add_argument("--data", default=str(MANIFEST))
    p.add_argument("--count", type=int, default=8, help="photos and samples per row")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--headline", action="store_true",
                   help="the default model's figure: docs/NAME.png and benchmarks/results/NAME.json")
    args = p.parse_args(argv)

    models = [(Path(run), *load_vae(Path(run))) for run in args.runs]
    size, latent = models[0][1].cfg.image_size, models[0][1].cfg.latent_dim
    if any((vae.cfg.image_size, vae.cfg.latent_dim) != (size, latent) for _, vae, _ in models):
        raise SystemExit("error: the runs differ in image or latent size")
    val = load_dataset(args.data, size, {"white_background": "1"}).val[: args.count]
    photos = torch.from_numpy(val).permute(0, 3, 1, 2).float() / 255.0
    z = torch.randn(args.count, latent, generator=torch.Generator().manual_seed(args.seed))

    rows, results = [("photo", report.as_rows(photos))], {}
    with torch.no_grad():
        for run, vae, state in models:
            rows.append((f"{run.name} recon", report.as_rows(vae.decoder(vae.encoder(photos)[0]))))
            fitted = state.get("latent_prior")
            for temperature in (1.0, 0.7):
                label = f"{run.name} {'fitted' if fitted else 'N(0,I)'} T {temperature}"
                rows.append((label, report.as_rows(vae.decoder(prior.latents(fitted, z, temperature)))))
            metrics = json.loads((run / "metrics.json").read_text())
            results[run.name] = {"config": json.loads((run / "config.json").read_text()),
                                 "validation": metrics["validation"], "training": metrics["training"]}
            v = metrics["validation"]
            print(f"{run.name:20s} val PSNR {v['psnr']:6.2f} dB  SSIM {v['ssim']:.3f}  KL {v['kl']:6.1f}")
    if args.headline:
        figure = save_grid(args.name, rows, ROOT / "docs")
        print(f"-> {save(args.name, {'runs': results}, PRODUCT_RESULTS)}, {figure}")
    else:
        figure = save_grid(args.name, rows)
        print(f"-> {save(args.name, {'runs': results})}, {figure}")


if __name__ == "__main__":
    main()
