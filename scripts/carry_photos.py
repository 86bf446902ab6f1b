"""Pack photos of ../shared/data with their manifest rows into a git-ignored folder, in zip
parts small enough to travel to the GPU machine beside the repository (the device tool sends
at most 64 MiB per call, the repository included, and counts thousands of small files as more
than their bytes: one zip per part travels as one file).

    python -m scripts.carry_photos                  # catalogue set: data-carry/part-1.zip (5.7 MiB)
    python -m scripts.carry_photos --set all        # ~9.5k photos: part-1.zip, part-2.zip, ... of <= 28 MiB

Unpacked there (`python3 -m zipfile -e data-carry/part-N.zip data-carry`), the parts give
data-carry/part-N/... and, from the last one, data-carry/manifest.csv, which keeps the fixed
train/val split and points into the parts; train with `--data data-carry/manifest.csv`. Files
left on the machine by one call stay for the next while it is warm, so the parts can go over in
consecutive calls. Never commit the copy: the photos' licence is unknown.
"""
from __future__ import annotations

import argparse
import csv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZIP_ENTRY_OVERHEAD = 128  # a stored entry's local header and central-directory record, less the name


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m scripts.carry_photos", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding manifest.csv")
    p.add_argument("--out", default=str(ROOT / "data-carry"))
    p.add_argument("--set", choices=("catalogue", "all"), default="catalogue",
                   help="catalogue: white_background=1 rows; all: every row")
    p.add_argument("--part-mib", type=float, default=28.0, help="largest part, in MiB")
    args = p.parse_args(argv)
    source, out = Path(args.data), Path(args.out)
    if out.resolve() == source.resolve() or source.resolve().is_relative_to(out.resolve()):
        raise SystemExit(f"error: --out {out} holds the photos of --data {source}: choose another folder")
    manifest = source / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"error: {manifest}: not found")
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if args.set == "all" or row.get("white_background") == "1"]
        fields = reader.fieldnames
    # A smaller set must not leave old parts behind; anything else there (a checkpoint to carry) stays.
    for old in [*out.glob("part-*.zip"), out / "manifest.csv"]:
        old.unlink(missing_ok=True)
    parts, limit = [[]], args.part_mib * 2**20  # (arcname, path) per part
    part_bytes = [0]
    for row in rows:
        photo = source / row["file"]
        size = photo.stat().st_size + ZIP_ENTRY_OVERHEAD + 2 * len(row["file"])
        if part_bytes[-1] and part_bytes[-1] + size > limit:
            parts.append([])
            part_bytes.append(0)
        part_bytes[-1] += size
        row["file"] = f"part-{len(parts)}/{row['file']}"
        parts[-1].append((row["file"], photo))
    # The manifest goes, compressed, into the last part (a generous bound on its zipped size).
    if part_bytes[-1] + manifest.stat().st_size // 2 > limit:
        parts.append([])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"packed {len(rows)} photos ({args.set} set) into {len(parts)} part(s) under {out}:")
    for n, members in enumerate(parts, 1):
        zipped = out / f"part-{n}.zip"
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not compress
            for arcname, photo in members:
                archive.write(photo, arcname)
            if n == len(parts):
                archive.write(out / "manifest.csv", "manifest.csv", zipfile.ZIP_DEFLATED)
        last = " (+ manifest.csv)" if n == len(parts) else ""
        print(f"  carry {zipped.relative_to(ROOT) if zipped.is_relative_to(ROOT) else zipped}: "
              f"{zipped.stat().st_size / 2**20:.1f} MiB{last}")


if __name__ == "__main__":
    main()
