"""Copy the catalogue set of ../shared/data (white_background=1) with its manifest into a
git-ignored folder, so it can travel to a GPU machine beside the repository.

    python -m scripts.copy_catalogue [--out data-carry]

The copy keeps the manifest's relative paths and its fixed train/val split; train on it
with `--data data-carry/manifest.csv`. Never commit it: the photos' licence is unknown.
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m scripts.copy_catalogue", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding manifest.csv")
    p.add_argument("--out", default=str(ROOT / "data-carry"))
    args = p.parse_args(argv)
    source, out = Path(args.data), Path(args.out)
    manifest = source / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"error: {manifest}: not found")
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row.get("white_background") == "1"]
        fields = reader.fieldnames
    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        target = out / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row["file"], target)
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"copied {len(rows)} catalogue photos ({size / 2**20:.1f} MiB) to {out}")


if __name__ == "__main__":
    main()
