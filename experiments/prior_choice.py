"""Which sampling distribution? One Gaussian against mixtures of K, judged by the yardstick.

    python -m experiments.prior_choice model/default --components 1 4 8 16 32 --samples 256

For an exported model, fits each distribution to its encoder's codes of the catalogue training
photos (each as it is and three times flipped and hue-rotated, as training.prior does), swaps it
into a copy of the model folder, draws samples through the service's own code and scores them with
benchmarks.perceptual: car@5, FD against the catalogue training photos, sharpness and novelty
(>= 1: no closer to the training photos than new photos are). Prints a table and writes
experiments/results/prior_choice_<label>.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import perceptual
from experiments.common import save
from model.runtime import Model
from training import prior
from training.prior import write as write_prior
from training.sharpen import load_init

def with_prior(model_dir: Path, fitted: dict, out: Path) -> Path:
    """A copy of model_dir serving `fitted` (model.json's format, latent entry and hashes follow)."""
    shutil.copytree(model_dir, out)
    meta = json.loads((out / "model.json").read_text())
    meta["latent"] = write_prior(fitted, out)
    meta["format_version"] = 2
    meta["files"] = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in meta["files"]}
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.prior_choice", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="exported model folder")
    p.add_argument("--components", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    p.add_argument("--covariance", default="full", choices=("full", "tied"))
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--temperature", type=float, nargs="+", default=[1.0])
    p.add_argument("--label", default=None)
    args = p.parse_args(argv)
    model_dir = Path(args.model)

    vae, _, _ = load_init(model_dir)
    train_images, train_f, _ = perceptual.training_photos(perceptual.MANIFEST, vae.cfg.image_size)
    _, val = perceptual.load_photos(perceptual.MANIFEST, perceptual.manifest_rows(perceptual.MANIFEST, "1", "val"),
                                    vae.cfg.image_size)
    val_f, _ = perceptual.look(val)
    images = torch.from_numpy(train_images).permute(0, 3, 1, 2).contiguous()
    codes = prior.encode_means(vae.encoder, images, torch.device("cpu"), copies=4,
                               generator=torch.Generator().manual_seed(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.components:
            t0 = time.perf_counter()
            fitted = prior.fit_gaussian(codes) if k == 1 else prior.fit_mixture(codes, k, covariance=args.covariance)
            model = Model(with_prior(model_dir, fitted, Path(tmp) / f"k{k}"))
            for temperature in args.temperature:
                drawn = perceptual.served_samples(model, args.samples, temperature=temperature)
                features, top5 = perceptual.look(drawn)
                row = {"components": k, "covariance": args.covariance if k > 1 else "full", "temperature": temperature,
                       **perceptual.score(drawn, features, top5, train_f, val),
                       "novelty": round(perceptual.novelty(features, val_f, train_f), 4),
                       "seconds": round(time.perf_counter() - t0, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    command = "python -m experiments.prior_choice " + " ".join(sys.argv[1:] if argv is None else argv)
    out = save(f"prior_choice_{args.label or model_dir.name}",
               {"command": command, "model": str(model_dir), "codes": len(codes), "rows": rows})
    print(f"-> {out}")


if __name__ == "__main__":
    main()
