"""Dataset discovery: folders, zips, manifests, splits, and unreadable files."""
import shutil
import zipfile

import numpy as np
import pytest

from tests.conftest import SHARED_DATA, catalogue_rows
from training.data import DatasetError, find_photos, hash_split, load_dataset


def test_folder_is_searched_recursively(tmp_path, synthetic_dir):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    files = sorted(synthetic_dir.iterdir())[:6]
    for f in files[:3]:
        shutil.copy(f, tmp_path / f.name)
    for f in files[3:]:
        shutil.copy(f, nested / f.name.replace(".jpg", ".JPG"))
    (tmp_path / "notes.txt").write_text("not a photo")
    data = load_dataset(tmp_path, 64)
    assert data.images.shape == (6, 64, 64, 3)
    assert data.is_val.any() and not data.is_val.all()


def test_zip_archive(tmp_path, synthetic_dir):
    archive = tmp_path / "cars.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(synthetic_dir.iterdir())[:10]:
            z.write(f, f"photos/{f.name}")
        z.writestr("__MACOSX/photos/._car.jpg", b"resource fork junk")
    data = load_dataset(archive, 64)
    assert len(data.images) == 10 and not data.skipped


def test_manifest_with_split_and_filter():
    rows = catalogue_rows("val")
    photos = find_photos(SHARED_DATA / "manifest.csv", {"white_background": "1"})
    val = [p for p in photos if p.split == "val"]
    assert len(val) == len(rows) and all(p.split in ("train", "val") for p in photos)
    # The filter applies to the training rows too: exactly the catalogue photos, both sides.
    for split in ("train", "val"):
        assert sorted(p.name for p in photos if p.split == split) == \
            sorted(str(SHARED_DATA / r["file"]) for r in catalogue_rows(split))


def test_val_filter_keeps_every_train_row_but_only_matching_val_rows():
    # Train on the whole set, report on the catalogue photos the service is for.
    photos = find_photos(SHARED_DATA / "manifest.csv", val_filters={"white_background": "1"})
    everything = find_photos(SHARED_DATA / "manifest.csv")
    val = sorted(p.name for p in photos if p.split == "val")
    assert val == sorted(str(SHARED_DATA / r["file"]) for r in catalogue_rows("val"))
    train = [p for p in photos if p.split == "train"]
    assert len(train) == sum(p.split == "train" for p in everything) > 5 * len(catalogue_rows("train"))


def test_val_filter_needs_a_manifest_column(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,split\na.jpg,train\n")
    with pytest.raises(DatasetError, match="m.csv.*'white_background'"):
        find_photos(manifest, val_filters={"white_background": "1"})
    with pytest.raises(DatasetError, match="needs a manifest"):
        find_photos(tmp_path, val_filters={"white_background": "1"})
    # Without a split column the validation photos are picked later, by name: a val filter would
    # silently apply to none of them.
    (tmp_path / "nosplit.csv").write_text("file,white_background\na.jpg,1\nb.jpg,0\n")
    with pytest.raises(DatasetError, match="nosplit.csv: --val-filter needs a 'split' column"):
        find_photos(tmp_path / "nosplit.csv", val_filters={"white_background": "1"})


def test_manifest_errors_name_the_file(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("path,split\na.jpg,train\n")
    with pytest.raises(DatasetError, match="m.csv.*'file' column"):
        find_photos(bad)
    good = tmp_path / "n.csv"
    good.write_text("file,split\na.jpg,train\n")
    with pytest.raises(DatasetError, match="colour"):
        find_photos(good, {"colour": "red"})
    with pytest.raises(DatasetError, match="no such file"):
        find_photos(tmp_path / "missing")


def test_a_filter_that_matches_no_row_says_so_and_what_the_column_holds(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,white_background,split\na.jpg,1,train\nb.jpg,0,val\n")
    with pytest.raises(DatasetError, match=r"m.csv: no manifest row matches --filter white_background=yes "
                                           r"\('white_background' holds '0', '1'\)"):
        load_dataset(manifest, 64, {"white_background": "yes"})
    # A row shorter than the header (a spreadsheet dropping trailing empty cells) holds '' there.
    manifest.write_text("file,white_background,split\na.jpg,1,train\nb.jpg\n")
    with pytest.raises(DatasetError, match=r"no manifest row matches --filter white_background=yes "
                                           r"\('white_background' holds '', '1'\)"):
        load_dataset(manifest, 64, {"white_background": "yes"})
    # Rows that match, all validation rows that --val-filter then drops: no such claim.
    manifest.write_text("file,white_background,split\na.jpg,1,val\nb.jpg,0,train\n")
    assert find_photos(manifest, {"white_background": "1"}, {"white_background": "0"}) == []


def test_corrupt_files_are_skipped_with_one_warning_naming_them(tmp_path, synthetic_dir, real_photos):
    for f in sorted(synthetic_dir.iterdir())[:5]:
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(real_photos[0], tmp_path / "real.jpg")
    (tmp_path / "broken.jpg").write_bytes(real_photos[0].read_bytes()[:300])
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        data = load_dataset(tmp_path, 64)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "broken.jpg" in message and "empty.png" in message and "skipped 2" in message
    assert len(data.images) == 6 and len(data.skipped) == 2


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                         zipfile.ZIP_LZMA])
def test_a_damaged_zip_member_is_skipped_with_the_warning_naming_it(tmp_path, synthetic_dir, compression):
    archive = tmp_path / "cars.zip"
    files = sorted(synthetic_dir.iterdir())[:6]
    with zipfile.ZipFile(archive, "w", compression) as z:
        for f in files:
            z.write(f, f.name)
    # Flip one byte inside the first member's data: its CRC no longer matches.
    with zipfile.ZipFile(archive) as z:
        first = z.infolist()[0]
    raw = bytearray(archive.read_bytes())
    start = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra)
    raw[start + first.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=f"skipped 1 .*{first.filename}") as caught:
        data = load_dataset(archive, 64)
    assert len(caught) == 1 and len(data.images) == 5


def test_manifests_from_spreadsheets_load_and_other_encodings_are_named(tmp_path, synthetic_dir):
    files = sorted(synthetic_dir.iterdir())[:4]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    rows = "".join(f"{f.name},{'val' if i == 0 else 'train'}\n" for i, f in enumerate(files))
    bom = tmp_path / "excel.csv"
    bom.write_bytes("file,split\n".encode("utf-8-sig") + rows.encode())
    data = load_dataset(bom, 64)
    assert len(data.images) == 4 and data.is_val.sum() == 1
    latin = tmp_path / "latin.csv"
    latin.write_bytes("file,split\nvoiture_\xe9t\xe9.jpg,train\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="latin.csv.*UTF-8"):
        find_photos(latin)


def test_a_manifest_split_is_never_crossed(tmp_path, synthetic_dir):
    # A val filter that matches no val row must not quietly validate on a training photo.
    files = sorted(synthetic_dir.iterdir())[:6]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    manifest = tmp_path / "split.csv"
    manifest.write_text("file,white_background,split\n" + "".join(
        f"{f.name},1,{'val' if i < 2 else 'train'}\n" for i, f in enumerate(files)))
    assert load_dataset(manifest, 64, val_filters={"white_background": "1"}).is_val.sum() == 2
    with pytest.raises(DatasetError, match="split.csv: no readable 'val' rows.*--val-filter"):
        load_dataset(manifest, 64, val_filters={"white_background": "0"})


def test_hash_split_is_fixed_and_about_the_requested_size():
    names = [f"/x/car_{i}.jpg" for i in range(5000)]
    first = [hash_split(n, 0.1) for n in names]
    assert first == [hash_split(n.replace("/x/", "/elsewhere/"), 0.1) for n in names]
    assert 0.08 < first.count("val") / len(first) < 0.12


def test_photos_zipped_at_the_archive_root_split_as_in_their_folder(tmp_path, synthetic_dir):
    # A zip made inside the folder (`cd photos && zip -r ../photos.zip .`) has no folder in its
    # member names; the split must still come from the file names alone, or --resume refuses it.
    files = sorted(synthetic_dir.iterdir())[:20]
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for f in files:
            archive.write(f, f.name)
    folder = load_dataset(synthetic_dir, 64, val_fraction=0.3)
    zipped = load_dataset(tmp_path / "photos.zip", 64, val_fraction=0.3)
    in_folder = dict(zip((n.rsplit("/", 1)[1] for n in folder.names), folder.is_val))
    assert [in_folder[n.rsplit(":", 1)[1]] for n in zipped.names] == list(zipped.is_val)
    assert zipped.is_val.any() and not zipped.is_val.all()


def test_images_match_the_shared_loader(real_photos):
    from model.images import load_square

    folder_data = load_dataset(real_photos[0].parent, 64, val_fraction=0.1)
    index = folder_data.names.index(str(real_photos[0]))
    assert np.array_equal(folder_data.images[index], load_square(real_photos[0].read_bytes(), 64))


def test_the_same_photos_zipped_or_moved_are_the_same_dataset(tmp_path, synthetic_dir):
    # Subfolders whose names sort differently as whole strings than part by part ("cars" < "cars-red",
    # but "cars-red/x" < "cars/x"): a zip used to list them in the other order.
    import zipfile

    files = sorted(synthetic_dir.iterdir())[:6]
    for i, f in enumerate(files):
        folder = tmp_path / "photos" / ("cars" if i % 2 else "cars-red")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f.name)
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for f in sorted(p for p in (tmp_path / "photos").rglob("*") if p.is_file()):
            archive.write(f, f.relative_to(tmp_path / "photos").as_posix())
    shutil.copytree(tmp_path / "photos", tmp_path / "moved")
    folder = load_dataset(tmp_path / "photos", 64, val_fraction=0.3)
    assert load_dataset(tmp_path / "moved", 64, val_fraction=0.3).fingerprint == folder.fingerprint
    assert load_dataset(tmp_path / "photos.zip", 64, val_fraction=0.3).fingerprint == folder.fingerprint
    (tmp_path / "moved" / "cars" / files[1].name).unlink()
    assert load_dataset(tmp_path / "moved", 64, val_fraction=0.3).fingerprint != folder.fingerprint
