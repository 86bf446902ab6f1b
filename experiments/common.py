"""Shared by the experiment scripts: results go to experiments/results, figures to experiments/figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks import common
from benchmarks.common import MANIFEST, ROOT  # noqa: F401 - the experiments' names for them

RESULTS = ROOT / "experiments" / "results"
FIGURES = ROOT / "experiments" / "figures"


def save(name: str, result: dict, folder: Path = RESULTS) -> Path:
    """<folder>/<name>.json with the machine and commit that measured it."""
    return common.save(name, result, folder)


def save_grid(name: str, rows: list[tuple[str, np.ndarray]], folder: Path = FIGURES) -> Path:
    """<folder>/<name>.png: labelled rows of uint8 images (N, H, W, 3), as the trainer draws them."""
    return common.save_grid(name, rows, folder)


def labelled_grids(runs: list[tuple[str, Path]], out: Path) -> None:
    """One figure of training runs: each run's last sample grid under its label."""
    panels = []
    for label, run in runs:
        grid = Image.open(sorted((run / "samples").glob("*.png"))[-1]).convert("RGB")
        strip = Image.new("RGB", (grid.width, 22), "white")
        ImageDraw.Draw(strip).text((6, 5), label, fill="black")
        panels += [np.asarray(strip), np.asarray(grid)]
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(panels)).save(out, optimize=True)
