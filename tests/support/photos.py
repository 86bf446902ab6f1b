"""The shared photos (../shared/data, or $CAR_DATA): never copied into the repository."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SHARED_DATA = Path(os.environ.get("CAR_DATA", ROOT.parent / "shared" / "data"))


def catalogue_rows(split: str = "val") -> list[dict]:
    manifest = SHARED_DATA / "manifest.csv"
    if not manifest.exists():
        pytest.fail(f"real car photos not found at {SHARED_DATA} (set CAR_DATA or place ../shared/data)")
    with open(manifest, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["white_background"] == "1" and r["split"] == split]
    return sorted(rows, key=lambda r: r["file"])


def real_photo_paths() -> list[Path]:
    """A few real catalogue photos (validation split), red and otherwise."""
    rows = catalogue_rows()
    red = [r for r in rows if r["file"].startswith("cars-red/")][:3]
    other = [r for r in rows if r["file"].startswith("stanford-cars/")][:3]
    return [SHARED_DATA / r["file"] for r in red + other]
