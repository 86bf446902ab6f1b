"""How samples look, measured on exported model directories: codes drawn from N(0, I)
against codes from the Gaussian fitted to the training photos (what the service samples).

    python -m benchmarks.sample_quality model/default /tmp/other-model --name sample_quality_128px

For each model and each way of drawing codes, 256 samples at temperature 1 (the same
draws u for every model), scored against the catalogue validation photos:
- white_border: share of images whose border is more than 70% near-white (the manifest's
  `white_background` rule): catalogue-style pictures, not street scenes;
- sharpness: mean absolute Laplacian of the luminance, as a fraction of the photos';
- colours: each image's dominant hue among its saturated pixels (or grey);
- spread: mean absolute pixel difference between two samples, as a fraction of that between
  two photos (low means the samples are all alike).
These are proxies, not a realism score (no Inception network here); the figure
benchmarks/results/<name>.png shows the samples themselves (the comparisons that chose the default
model, made with it, are in experiments/results and experiments/figures).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import MANIFEST, save, save_grid
from model.images import from_model_output, load_square
from model.runtime import Model

HUES = ("red", "yellow", "green", "cyan", "blue", "magenta")


def white_border(images: np.ndarray, width_fraction: float = 0.04) -> np.ndarray:
    """images uint8 (N, S, S, 3) -> bool (N,): more than 70% of the border ring is near-white."""
    s = images.shape[1]
    w = max(1, round(s * width_fraction))
    ring = np.ones((s, s), bool)
    ring[w:-w, w:-w] = False
    near_white = (images[:, ring] >= 225).all(-1)
    return near_white.mean(1) > 0.7


def sharpness(images: np.ndarray) -> np.ndarray:
    grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    lap = 4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:]
    return np.abs(lap).mean((1, 2))


def dominant_colour(image: np.ndarray) -> str:
    hsv = np.asarray(Image.fromarray(image).convert("HSV")).reshape(-1, 3).astype(np.int32)
    coloured = hsv[(hsv[:, 1] > 90) & (hsv[:, 2] > 50)]
    if len(coloured) < 0.03 * len(hsv):
        return "grey"
    bins = ((coloured[:, 0] * 360 // 256 + 30) % 360) // 60  # red centred on hue 0
    return HUES[np.bincount(bins, minlength=6).argmax()]


def spread(images: np.ndarray, pairs: int = 2000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(images), (2, pairs))
    keep = a != b
    diff = images[a[keep]].astype(np.float32) - images[b[keep]].astype(np.float32)
    return float(np.abs(diff / 255.0).mean()) if keep.any() else 0.0


def scores(images: np.ndarray, photos: np.ndarray) -> dict:
    colours = [dominant_colour(im) for im in images]
    return {
        "white_border": round(float(white_border(images).mean()), 3),
        "sharpness_vs_photos": round(float(sharpness(images).mean() / sharpness(photos).mean()), 3),
        "colours": {c: colours.count(c) for c in (*HUES, "grey") if colours.count(c)},
        "spread_vs_photos": round(spread(images) / spread(photos), 3),
    }


def catalogue_photos(manifest: Path, size: int) -> np.ndarray:
    with open(manifest, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["white_background"] == "1" and r["split"] == "val"]
    return np.stack([load_square((manifest.parent / r["file"]).read_bytes(), size) for r in rows])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sample_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="exported model directories (hold model.json)")
    p.add_argument("--name", required=True, help="name of the result JSON and of the figure")
    p.add_argument("--data", default=str(MANIFEST))
    p.add_argument("--count", type=int, default=256)
    p.add_argument("--show", type=int, default=8, help="samples per row in the figure")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)

    models = [(Path(m), Model(m, "onnx")) for m in args.models]
    size, latent = models[0][1].image_size, models[0][1].latent_dim
    if any((m.image_size, m.latent_dim) != (size, latent) for _, m in models):
        raise SystemExit("error: the models differ in image or latent size")
    photos = catalogue_photos(Path(args.data), size)
    u = np.random.default_rng(args.seed).standard_normal((args.count, latent))
    results = {"catalogue val photos": scores(photos, photos)}
    rows = [("photos", photos[: args.show])]
    for folder, model in models:
        draws = {"N(0,I)": u.astype(np.float32)}
        if model.prior is not None:
            draws["fitted"] = model.sample_codes(np.random.default_rng(args.seed), args.count)
        for how, z in draws.items():
            images = np.concatenate([from_model_output(model.decode(z[i : i + 64])) for i in range(0, len(z), 64)])
            label = f"{folder.name} {how}"
            results[label] = scores(images, photos)
            rows.append((label, images[: args.show]))
            print(f"{label:28s} {results[label]}")
    print(f"{'catalogue val photos':28s} {results['catalogue val photos']}")
    figure = save_grid(args.name, rows)
    print(f"-> {save(args.name, {'count': args.count, 'temperature': 1.0, 'results': results})}, {figure}")


if __name__ == "__main__":
    main()
