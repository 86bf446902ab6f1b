"""Shared by the benchmark scripts (and experiments/common.py): where results go and what machine produced them."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MANIFEST = ROOT.parent / "shared" / "data" / "manifest.csv"  # the shared photos, never copied in


def machine() -> dict:
    # "-dirty": measured with uncommitted changes, so the commit alone does not reproduce it.
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:  # no git where it runs (a bare device machine): the results still count
        commit = ""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit or None,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def save(name: str, result: dict, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    return path


def save_grid(name: str, rows: list[tuple[str, np.ndarray]], folder: Path = RESULTS) -> Path:
    """<folder>/<name>.png: labelled rows of uint8 images (N, H, W, 3), as the trainer draws them."""
    from training.report import image_grid  # torch: only the scripts that draw need it

    folder.mkdir(parents=True, exist_ok=True)
    figure = folder / f"{name}.png"
    image_grid(rows).save(figure, optimize=True)
    return figure
