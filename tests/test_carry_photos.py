"""scripts/carry_photos.py: the photos a GPU session needs, in parts that fit the device tool."""
import csv
import zipfile

import pytest

from scripts.carry_photos import main as carry_photos
from tests.conftest import SHARED_DATA, catalogue_rows
from training.data import find_photos


def test_parts_stay_under_the_limit_and_the_manifest_keeps_the_split(tmp_path, capsys):
    packed, out = tmp_path / "data-carry", tmp_path / "unpacked"
    carry_photos(["--data", str(SHARED_DATA), "--out", str(packed), "--part-mib", "2"])
    parts = sorted(packed.glob("part-*.zip"))
    assert len(parts) >= 2 and "(+ manifest.csv)" in capsys.readouterr().out
    for part in parts:  # each travels as one file, within the limit
        assert part.stat().st_size <= 2 * 2**20
        with zipfile.ZipFile(part) as archive:  # as the GPU machine unpacks them
            archive.extractall(out)
            assert ("manifest.csv" in archive.namelist()) == (part == parts[-1])

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


def test_a_rerun_replaces_its_parts_and_keeps_everything_else(tmp_path):
    packed = tmp_path / "data-carry"
    carry_photos(["--data", str(SHARED_DATA), "--out", str(packed), "--part-mib", "2"])
    many = len(list(packed.glob("part-*.zip")))
    (packed / "sigma128.pt").write_bytes(b"a checkpoint carried beside the photos")
    carry_photos(["--data", str(SHARED_DATA), "--out", str(packed), "--part-mib", "8"])
    assert len(list(packed.glob("part-*.zip"))) < many, "the earlier, smaller parts are gone"
    assert (packed / "sigma128.pt").read_bytes() == b"a checkpoint carried beside the photos"
    with pytest.raises(SystemExit, match="holds the photos"):
        carry_photos(["--data", str(tmp_path / "photos"), "--out", str(tmp_path)])
