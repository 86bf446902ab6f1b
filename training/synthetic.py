"""Procedurally drawn cars: test data the project makes itself, any colour, any amount.

    python -m training.synthetic OUT_DIR --count 200

Each picture is a side/three-quarter-ish car (body, cabin with windows, two wheels,
lights) in a random colour on a white background, at a random size and position, with
a random aspect ratio so the padding path of the loader is exercised.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def draw_car(rng: np.random.Generator, width: int = 160, height: int = 112) -> Image.Image:
    im = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(im)
    colour = tuple(int(c) for c in rng.integers(20, 236, size=3))
    body_w = int(width * rng.uniform(0.6, 0.85))
    body_h = int(height * rng.uniform(0.18, 0.28))
    left = int(rng.integers(2, max(3, width - body_w - 2)))
    top = int(height * rng.uniform(0.42, 0.55))
    d.rounded_rectangle([left, top, left + body_w, top + body_h], radius=body_h // 3, fill=colour)
    # Cabin: a trapezoid on the body, with two windows.
    cabin_h = int(body_h * rng.uniform(0.7, 1.0))
    c0, c1 = left + int(body_w * 0.2), left + int(body_w * 0.8)
    d.polygon([(c0, top), (c0 + body_w * 0.12, top - cabin_h), (c1 - body_w * 0.1, top - cabin_h), (c1, top)], fill=colour)
    glass = (170, 200, 225)
    mid = (c0 + c1) // 2
    d.polygon([(c0 + 6, top - 2), (c0 + body_w * 0.14, top - cabin_h + 4), (mid - 2, top - cabin_h + 4), (mid - 2, top - 2)], fill=glass)
    d.polygon([(mid + 2, top - 2), (mid + 2, top - cabin_h + 4), (c1 - body_w * 0.12, top - cabin_h + 4), (c1 - 6, top - 2)], fill=glass)
    # Wheels and lights.
    r = int(body_h * rng.uniform(0.45, 0.6))
    for cx in (left + int(body_w * 0.22), left + int(body_w * 0.78)):
        d.ellipse([cx - r, top + body_h - r, cx + r, top + body_h + r], fill=(25, 25, 25))
        d.ellipse([cx - r // 2, top + body_h - r // 2, cx + r // 2, top + body_h + r // 2], fill=(160, 160, 160))
    d.ellipse([left + body_w - 8, top + 3, left + body_w - 2, top + 9], fill=(255, 240, 160))
    d.rectangle([left + 1, top + 3, left + 5, top + 8], fill=(200, 30, 30))
    return im


def make_cars(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(160, 112), (200, 120), (128, 128), (120, 150)]
    return [draw_car(rng, *sizes[i % len(sizes)]) for i in range(count)]


def write_cars(folder: str | Path, count: int, seed: int = 0) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(make_cars(count, seed)):
        path = folder / (f"car_{i:04d}.png" if i % 3 == 0 else f"car_{i:04d}.jpg")
        im.save(path, quality=92) if path.suffix == ".jpg" else im.save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.synthetic", description="Draw synthetic car photos.")
    p.add_argument("out", help="folder to write JPEG/PNG files into")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(f"wrote {len(write_cars(args.out, args.count, args.seed))} images to {args.out}")


if __name__ == "__main__":
    main()
