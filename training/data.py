"""Finding photos, decoding them once, and splitting them into train and validation.

A dataset is a folder (searched recursively), a .zip, or a manifest CSV with a `file`
column (relative to the CSV) and optionally a `split` column (`train`/`val`). Every
photo is decoded once into a uint8 array of shape (N, S, S, 3) — small enough to keep
in memory, or on the GPU, for the whole run.
"""
from __future__ import annotations

import csv
import hashlib
import lzma
import sys
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from model.images import ImageError, load_square

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}


class DatasetError(ValueError):
    """The dataset as a whole cannot be used; the message names the path."""


@dataclass
class Photo:
    name: str  # path as shown to the user
    read: Callable[[], bytes]
    split: str | None = None  # from a manifest, else decided by hash
    file_name: str = ""  # the photo's own name, without folders: what the fixed split is hashed from

    def __post_init__(self):
        self.file_name = self.file_name or Path(self.name).name


@dataclass
class Dataset:
    images: np.ndarray  # uint8 (N, S, S, 3)
    names: list[str]
    is_val: np.ndarray  # bool (N,)
    skipped: list[str]
    digests: list[str] | None = None  # of each kept photo's file bytes

    @property
    def fingerprint(self) -> str:
        """Which photos, in which order and split: the same for a folder moved or copied to
        another machine, different as soon as a photo or the split changes."""
        lines = (f"{d} {'val' if v else 'train'}" for d, v in zip(self.digests or [], self.is_val))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    @property
    def train(self) -> np.ndarray:
        return self.images[~self.is_val]

    @property
    def val(self) -> np.ndarray:
        return self.images[self.is_val]


def find_photos(
    path: str | Path, filters: dict[str, str] | None = None, val_filters: dict[str, str] | None = None
) -> list[Photo]:
    """Photos under path; with a manifest, rows matching every filter (and, for `val` rows, every val filter)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        if filters or val_filters:
            raise DatasetError(f"{path}: --filter needs a manifest CSV, not a folder")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        return [Photo(str(p), p.read_bytes) for p in files]
    suffix = path.suffix.lower()
    if suffix == ".zip":
        if filters or val_filters:
            raise DatasetError(f"{path}: --filter needs a manifest CSV, not a zip")
        return _zip_photos(path)
    if suffix == ".csv":
        return _manifest_photos(path, filters or {}, val_filters or {})
    raise DatasetError(f"{path}: expected a folder, a .zip or a manifest .csv")


def _zip_photos(path: Path) -> list[Photo]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path}: not a readable zip file ({exc})") from exc
    # In the order a folder of the same photos is read (path by path, component-wise): the same
    # photos, zipped or not, are the same dataset (Dataset.fingerprint).
    names = sorted(
        (n for n in archive.namelist()
         if Path(n).suffix.lower() in EXTENSIONS and not n.startswith("__MACOSX/") and not n.endswith("/")),
        key=lambda n: PurePosixPath(n).parts,
    )

    def reader(member: str) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                return archive.read(member)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error,
                    lzma.LZMAError) as exc:
                # A damaged, encrypted or oddly compressed member: skipped like any unreadable photo.
                raise OSError(f"unreadable zip member: {exc}") from exc
        return read

    return [Photo(f"{path}:{n}", reader(n), file_name=PurePosixPath(n).name) for n in names]


def _manifest_photos(path: Path, filters: dict[str, str], val_filters: dict[str, str]) -> list[Photo]:
    try:
        # utf-8-sig: spreadsheet programs start a "CSV UTF-8" file with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: a manifest must be UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, csv.Error) as exc:
        raise DatasetError(f"{path}: the manifest cannot be read ({exc})") from None
    if not rows or "file" not in rows[0]:
        raise DatasetError(f"{path}: a manifest needs a header row with a 'file' column")
    if val_filters and "split" not in rows[0]:
        # Its validation photos are chosen later, by name: a val filter would silently apply to none.
        raise DatasetError(f"{path}: --val-filter needs a 'split' column in the manifest")
    for column in {**filters, **val_filters}:
        if column not in rows[0]:
            raise DatasetError(f"{path}: --filter names column '{column}', which the manifest lacks")
    root = path.parent
    photos, matched = [], 0

    def value(row: dict, column: str) -> str:
        return row.get(column) or ""  # a row shorter than the header has None for its last columns

    for row in rows:
        split = row.get("split") or None
        if split not in (None, "train", "val"):
            raise DatasetError(f"{path}: split must be 'train' or 'val', not '{split}' ({value(row, 'file')})")
        if not all(value(row, column) == wanted for column, wanted in filters.items()):
            continue
        matched += 1
        # e.g. train on every photo but report on the catalogue-style ones only
        if split == "val" and not all(value(row, column) == wanted for column, wanted in val_filters.items()):
            continue
        file = root / value(row, "file")
        photos.append(Photo(str(file), file.read_bytes, split))
    if filters and not matched:
        flags = " ".join(f"--filter {column}={wanted}" for column, wanted in filters.items())
        held = "; ".join(
            f"'{column}' holds {', '.join(repr(v) for v in sorted({value(row, column) for row in rows})[:10])}"
            for column, wanted in filters.items() if all(value(row, column) != wanted for row in rows))
        raise DatasetError(f"{path}: no manifest row matches {flags}" + (f" ({held})" if held else ""))
    return photos


def hash_split(file_name: str, val_fraction: float) -> str:
    """A fixed split from the file's name (folders ignored): stable across runs, machines and file order."""
    digest = int(hashlib.sha1(Path(file_name).name.encode()).hexdigest()[:8], 16)
    return "val" if digest % 10_000 < val_fraction * 10_000 else "train"


def load_dataset(
    path: str | Path,
    image_size: int,
    filters: dict[str, str] | None = None,
    val_fraction: float = 0.1,
    val_filters: dict[str, str] | None = None,
    workers: int = 4,
) -> Dataset:
    photos = find_photos(path, filters, val_filters)
    if not photos:
        raise DatasetError(f"{path}: no JPEG, PNG or WebP images found")

    def decode(photo: Photo):
        try:
            raw = photo.read()
            return load_square(raw, image_size), hashlib.sha1(raw).hexdigest()
        except (ImageError, OSError) as exc:
            return f"{photo.name} ({exc})"

    # Pillow releases the GIL while decoding, so threads give a real speed-up.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(decode, photos))

    kept = [(p, a) for p, a in zip(photos, decoded) if not isinstance(a, str)]
    skipped = [a for a in decoded if isinstance(a, str)]
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): " + "; ".join(skipped), stacklevel=2)
    if not kept:
        what = "its one image could not" if len(photos) == 1 else f"none of its {len(photos)} images could"
        raise DatasetError(f"{path}: {what} be read")

    images = np.stack([a for _, (a, _) in kept])
    is_val = np.array([(p.split or hash_split(p.file_name, val_fraction)) == "val" for p, _ in kept])
    if any(p.split for p, _ in kept):
        # A manifest's split is the user's: never move its photos across it.
        if not is_val.any() or is_val.all():
            side = "val" if not is_val.any() else "train"
            raise DatasetError(f"{path}: no readable '{side}' rows left in the manifest's split"
                               + (" after --filter/--val-filter" if filters or val_filters else ""))
    elif is_val.all() or (not is_val.any() and len(kept) > 1):
        # Too few images for the hashed split to land on both sides: hold out the last one.
        is_val = np.zeros(len(kept), dtype=bool)
        is_val[-1] = True
    return Dataset(images, [p.name for p, _ in kept], is_val, skipped, [d for _, (_, d) in kept])


@contextmanager
def warnings_printed(enabled: bool = True):
    """For a command line: the warnings raised inside (load_dataset's skipped photos) as one
    'warning: ...' line each on stderr, printed even when the block fails (they may say why)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught if enabled else ():
                print(f"warning: {w.message}", file=sys.stderr)
