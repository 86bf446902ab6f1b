"""Copy photos of ../shared/data with their manifest rows into a git-ignored folder, in parts
small enough to travel to the GPU machine beside the repository (the device tool sends at most
64 MiB per call, the repository included).

    python -m scripts.carry_photos                  # catalogue set: data-carry/part-1 (5.7 MiB)
    python -m scripts.carry_photos --set all        # ~9.5k photos: part-1, part-2, ... of <= 28 MiB

The manifest (data-carry/manifest.csv) keeps the fixed train/val split and points into the
parts; train with `--data data-carry/manifest.csv`. Files left on the machine by one call stay
for the next while it is warm, so the parts can go over in consecutive calls: the last call
carries its part and the manifest. Never commit the copy: the photos' licence is unknown.
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m scripts.carry_photos", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding manifest.csv")
    p.add_argument("--out", default=str(ROOT / "data-carry"))
    p.add_argument("--set", choices=("catalogue", "all"), default="catalogue",
                   help="catalogue: white_background=1 rows; all: every row")
    p.add_argument("--part-mib", type=float, default=28.0, help="largest part, in MiB")
    args = p.parse_args(argv)
    source, out = Path(args.data), Path(args.out)
    manifest = source / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"error: {manifest}: not found")
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if args.set == "all" or row.get("white_background") == "1"]
        fields = reader.fieldnames
    shutil.rmtree(out, ignore_errors=True)  # a smaller set must not leave old parts behind
    part_bytes, limit = [0], args.part_mib * 2**20  # bytes in each part so far
    for row in rows:
        photo = source / row["file"]
        size = photo.stat().st_size
        if part_bytes[-1] and part_bytes[-1] + size > limit:
            part_bytes.append(0)
        part_bytes[-1] += size
        row["file"] = f"part-{len(part_bytes)}/{row['file']}"
        (out / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, out / row["file"])
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"copied {len(rows)} photos ({args.set} set) into {len(part_bytes)} part(s) under {out}:")
    for n, size in enumerate(part_bytes, 1):
        folder = out / f"part-{n}"
        last = " + manifest.csv: the last call" if n == len(part_bytes) else ""
        print(f"  carry {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}: "
              f"{size / 2**20:.1f} MiB{last}")


if __name__ == "__main__":
    main()
