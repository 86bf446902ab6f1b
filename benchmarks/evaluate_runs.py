"""Measure runs' weights again, here on the CPU, on the manifest's validation photos: the
catalogue ones (what training validates on) and the street and showroom ones, which no run
trains on or is chosen by, so they also check choices made on the catalogue photos.

    python -m benchmarks.evaluate_runs runs/sigma128 runs/gpu-scratch runs/ft-aug --name heldout_128px
    python -m benchmarks.evaluate_runs model/default --name default_model_onnx_128px

Each run's checkpoint `model` weights (a GPU run's trimmed checkpoint holds its best ones), or an
exported model folder (model.json) run through ONNX Runtime as the service runs it (its float
outputs, before the service rounds them to PNG pixels), reconstructed from
the posterior mean as the trainer validates. Writes benchmarks/results/<name>.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import MANIFEST, save
from training.data import load_dataset
from training.export import load_vae
from model.runtime import Model
from training.metrics import evaluate, reconstruction_metrics

SETS = {"catalogue": "1", "street_and_showroom": "0"}  # the manifest's white_background column


def measurer(folder: Path):
    """(image size, photos -> validation metrics) for a run folder or an exported model folder."""
    cpu = torch.device("cpu")
    if (folder / "model.json").is_file():
        exported = Model(folder, "onnx")

        def encode(x):
            return tuple(torch.from_numpy(a) for a in exported.encode(x.numpy()))

        def decode(z):
            return torch.from_numpy(exported.decode(z.numpy()))

        return exported.image_size, lambda photos: reconstruction_metrics(encode, decode, photos, cpu)
    vae = load_vae(folder)[0]
    return vae.cfg.image_size, lambda photos: evaluate(vae, photos, cpu)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evaluate_runs", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (checkpoint.pt) or exported model folders")
    p.add_argument("--name", required=True, help="name of the result JSON")
    p.add_argument("--data", default=str(MANIFEST))
    args = p.parse_args(argv)
    models = [(run, measurer(run)) for run in args.runs]
    sizes = {run.name: size for run, (size, _) in models}
    if len(set(sizes.values())) > 1:  # the photos are loaded once, at one size
        raise SystemExit(f"error: the runs have different image sizes {sizes}: evaluate them separately")
    size = models[0][1][0]
    results: dict = {run.name: {} for run, _ in models}
    for name, white in SETS.items():
        val = load_dataset(args.data, size, {}, val_filters={"white_background": white}).val
        photos = torch.from_numpy(val).permute(0, 3, 1, 2).contiguous()
        for run, (_, measure) in models:
            metrics = measure(photos)
            results[run.name][name] = {"photos": len(photos), **{k: round(v, 4) for k, v in metrics.items()}}
            print(f"{run.name:16s} {name:20s} {len(photos):4d} photos  PSNR {metrics['psnr']:6.2f} dB  "
                  f"SSIM {metrics['ssim']:.3f}  KL {metrics['kl']:6.1f}")
    print(f"-> {save(args.name, {'runs': results})}")


if __name__ == "__main__":
    main()
