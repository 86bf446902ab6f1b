"""Checkpoints that survive being killed mid-write.

The state is serialised to a temporary file in the same folder, flushed and fsynced,
then renamed over the old checkpoint: a rename within one file system is atomic, so at
every instant `checkpoint.pt` is either the old complete file or the new complete one.
Loading uses weights_only=True: a checkpoint can never run code.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

CHUNK = 1 << 20


def save_atomic(state: dict, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getbuffer())


def write_text_atomic(path: str | Path, text: str) -> None:
    """A small file (config.json, metrics.json) that is never seen half-written."""
    write_atomic(path, text.encode())


def write_atomic(path: str | Path, data) -> None:
    """data (bytes-like) as the file at path: a temporary file beside it, flushed, fsynced, renamed over it."""
    path = Path(path)
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


class CheckpointError(ValueError):
    """The checkpoint is missing, damaged or not ours; the message names the file."""


def load(path: str | Path, map_location="cpu") -> dict:
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are noise for a file refused anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint there") from None
    except Exception as exc:  # truncated, garbage, or pickled code that weights_only refuses
        raise CheckpointError(f"{path} cannot be loaded: it is cut short, damaged, or not a checkpoint this "
                              f"trainer wrote ({type(exc).__name__}: {first_sentence(str(exc))})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a training checkpoint")
    return state


def first_sentence(message: str, limit: int = 160) -> str:
    """The start of a library's error message, which can run to a paragraph of advice."""
    sentence = message.strip().split(". ")[0].splitlines()[0] if message.strip() else ""
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def checkpoint_path(run: str | Path) -> Path:
    """A run folder's checkpoint.pt, or the checkpoint file itself (a trimmed or carried one)."""
    run = Path(run)
    return run / "checkpoint.pt" if run.is_dir() else run


def with_best(state: dict) -> dict:
    """The state with the weights kept at the best validation PSNR (and the sampling distribution
    fitted to them) in place of the last ones; what `export --weights best` ships."""
    best = state["best"]
    return {**state, "model": best["model"], "latent_prior": best.get("latent_prior"),
            "epoch": best["epoch"], "step": best["step"], "final_step": state["step"]}


def best_metrics(metrics: dict, best: dict) -> dict:
    """A run's metrics.json as it reads for its best weights: their validation numbers (the
    mean-image baseline kept), and which weights they are."""
    training = metrics.get("training", {})
    weights = f"best validation PSNR, epoch {best['epoch']} of {training.get('epochs', '?')}"
    return {**metrics, "validation": {**metrics.get("validation", {}), **best["validation"]},
            "training": {**training, "weights": weights}}
