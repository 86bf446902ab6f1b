"""What the weights' moving average buys: a run trained with --ema keeps both the average
("model", what is exported) and the optimiser's own weights ("train_model"); evaluate both on
the catalogue set's validation photos.

    python -m experiments.ema_gain runs/ema64 runs/ema-ft --name ema

Writes experiments/results/<name>.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from experiments.common import MANIFEST, save
from training.vae import VAE, VAEConfig
from training import checkpoint
from training.data import load_dataset
from training.metrics import evaluate


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.ema_gain", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders trained with --ema")
    p.add_argument("--name", required=True, help="name of the result JSON")
    p.add_argument("--data", default=str(MANIFEST))
    args = p.parse_args(argv)
    results = {}
    for run in map(Path, args.runs):
        state = checkpoint.load(run / "checkpoint.pt")
        if "train_model" not in state:
            raise SystemExit(f"error: {run} was not trained with --ema")
        cfg = VAEConfig.from_dict(state["vae_config"])
        val = load_dataset(args.data, cfg.image_size, {"white_background": "1"}).val
        val = torch.from_numpy(val).permute(0, 3, 1, 2).contiguous()
        metrics = {}
        for key in ("model", "train_model"):
            vae = VAE(cfg)
            vae.load_state_dict(state[key])
            metrics[key] = evaluate(vae, val, torch.device("cpu"))
        gain = metrics["model"]["psnr"] - metrics["train_model"]["psnr"]
        results[run.name] = {"validation_average": metrics["model"], "validation_optimiser_weights": metrics["train_model"],
                             "psnr_gain_db": gain, "epochs": state["epoch"], "seconds": round(state["elapsed"])}
        print(f"{run.name:16s} average {metrics['model']['psnr']:.3f} dB, optimiser's weights "
              f"{metrics['train_model']['psnr']:.3f} dB: {gain:+.3f} dB")
    print(f"-> {save(args.name, {'runs': results})}")


if __name__ == "__main__":
    main()
