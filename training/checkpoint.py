"""Checkpoints that survive being killed mid-write.

The state is serialised to a temporary file in the same folder, flushed and fsynced,
then renamed over the old checkpoint: a rename within one file system is atomic, so at
every instant `checkpoint.pt` is either the old complete file or the new complete one.
Loading uses weights_only=True: a checkpoint can never run code.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

CHUNK = 1 << 20


def save_atomic(state: dict, path: str | Path) -> None:
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    # Leftovers of a writer that was killed mid-write are never read; clear them away.
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            for start in range(0, len(data), CHUNK):
                handle.write(data[start : start + CHUNK])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable (a power cut could otherwise undo it).
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)
