"""scripts/carry_photos.py: the photos a GPU session needs, in parts that fit the device tool."""
import csv

from scripts.carry_photos import main as carry_photos
from tests.conftest import SHARED_DATA, catalogue_rows
from training.data import find_photos


def test_parts_stay_under_the_limit_and_the_manifest_keeps_the_split(tmp_path, capsys):
    out = tmp_path / "data-carry"
    carry_photos(["--data", str(SHARED_DATA), "--out", str(out), "--part-mib", "2"])
    parts = sorted(out.glob("part-*"))
    assert len(parts) >= 2
    for part in parts:
        assert sum(f.stat().st_size for f in part.rglob("*") if f.is_file()) <= 2 * 2**20
    assert "manifest.csv: the last call" in capsys.readouterr().out

    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    originals = {r["file"]: r for r in catalogue_rows("val") + catalogue_rows("train")}
    assert len(rows) == len(originals)
    for row in rows:
        original = originals[row["file"].split("/", 1)[1]]
        assert row["split"] == original["split"]
        assert (out / row["file"]).read_bytes() == (SHARED_DATA / original["file"]).read_bytes()
    photos = find_photos(out / "manifest.csv", {"white_background": "1"})
    assert sum(p.split == "val" for p in photos) == len(catalogue_rows("val"))
