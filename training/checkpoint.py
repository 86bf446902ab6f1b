"""Checkpoints that survive being killed mid-write.

The state is serialised to a temporary file in the same folder, flushed and fsynced,
then renamed over the old checkpoint: a rename within one file system is atomic, so at
every instant `checkpoint.pt` is either the old complete file or the new complete one.
Loading uses weights_only=True: a checkpoint can never run code.

A training checkpoint holds the served weights (`model`: the moving average when EMA is on), the
optimiser's own weights (`train_model`), the optimiser, each rank's random state, and where the run
had got (RunState): what `--resume` needs to continue as if never stopped.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.schedule import Schedule
from training.vae import VAE, VAEConfig

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


def load_vae(run: Path, weights: str = "final") -> tuple[VAE, dict]:
    """The run's VAE (in eval mode) and checkpoint; weights "best" swaps in the weights kept at the
    best validation PSNR (and the sampling distribution fitted to them)."""
    path = Path(run) / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint (is {run} a training run folder?)")
    state = load(path)
    if weights == "best":
        if "best" not in state:
            raise CheckpointError(f"{path}: no best weights kept (trained before the trainer kept them): use --weights final")
        state = with_best(state)
    vae = VAE(VAEConfig.from_dict(state["vae_config"]))
    vae.load_state_dict(state["model"])
    return vae.eval(), state


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


@dataclass
class RunState:
    """Where a run has got: what its checkpoint keeps beside the weights, the optimiser and the random state."""

    schedule: Schedule
    epoch: int = 0  # whole epochs done
    step: int = 0
    elapsed: float = 0.0  # seconds of training, over every session
    history: list = field(default_factory=list)  # one entry per epoch (metrics.json's curves)
    batch: int = 0  # batches done of an epoch cut short (Ctrl-C, --max-time): a resume trains the rest
    batch_sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3))  # the epoch's loss sums so far
    best: dict | None = None  # the served weights at the best validation PSNR so far, with when and how good
    best_before_cut: dict | None = None  # `best` before the evaluation a cut-short epoch made
    saved_epoch: int | None = None  # the epoch of the newest checkpoint on disk (not saved in it)


def training_state(run: RunState, served, vae, optimizer, vae_config: dict, loss_config: dict, rngs: list[dict],
                   latent_prior: dict | None = None) -> dict:
    """What checkpoint.pt holds for a run at `run`; `served` is `vae` itself, or its moving average."""
    state = {
        "model": served.state_dict(), "optimizer": optimizer.state_dict(), "epoch": run.epoch, "step": run.step,
        "elapsed": run.elapsed, "history": run.history, "rng": rngs[0]["cpu"], "rng_ranks": rngs,
        "vae_config": vae_config, "loss_config": loss_config, "schedule": run.schedule.to_dict(),
        "batch": run.batch,
    }
    if run.batch:
        state["batch_sums"], state["best_before_cut"] = run.batch_sums.detach().cpu(), run.best_before_cut
    if served is not vae:
        state["train_model"] = vae.state_dict()
    if run.best:
        state["best"] = run.best
    if latent_prior:
        state["latent_prior"] = latent_prior
    return state


def save_training(path: Path, run: RunState, *args, **kwargs) -> None:
    """training_state(run, ...) written atomically to path; the run remembers the epoch saved."""
    save_atomic(training_state(run, *args, **kwargs), path)
    run.saved_epoch = run.epoch


def resume(path: Path, vae, optimizer, vae_config, total_steps: int, max_time: float | None) -> tuple[dict, RunState]:
    """Load a run's checkpoint into vae and optimizer -> (the state, where the run had got). The
    schedule is spread over total_steps and max_time from where the run was, should they have changed."""
    try:
        state = load(path)
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from None
    saved_cfg = state.get("vae_config")
    if saved_cfg and type(vae_config).from_dict(saved_cfg) != vae_config:
        raise SystemExit(f"error: {path} holds a model of {saved_cfg}, but {path.parent / 'config.json'} "
                         f"describes {vae_config.to_dict()}")
    try:
        # With EMA, "model" holds the average and "train_model" the optimiser's own weights.
        vae.load_state_dict(state.get("train_model", state["model"]))
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise SystemExit(f"error: {path} does not fit this run ({first_sentence(str(exc))})") from None
    step, elapsed, batch = state["step"], state["elapsed"], state.get("batch", 0)
    schedule = Schedule(total_steps, max_time)
    if "schedule" in state:  # a checkpoint from before had none: it resumes as it always did
        schedule = Schedule(**state["schedule"]).extended_to(total_steps, max_time, step, elapsed)
    run = RunState(schedule, state["epoch"], step, elapsed, state["history"], batch, saved_epoch=state["epoch"])
    # An epoch a Ctrl-C or --max-time cut short: its rest comes next, and its entry is redone whole.
    if batch and "batch_sums" in state:
        run.batch_sums = state["batch_sums"]
    # The best weights as they were before the cut: its evaluation is one an unstopped run never makes.
    run.best = state["best_before_cut"] if batch and "best_before_cut" in state else state.get("best")
    return state, run


def load_init(run: str | Path) -> dict:
    """The checkpoint of the run --init names."""
    try:
        return load(checkpoint_path(run))
    except CheckpointError as exc:
        raise SystemExit(f"error: --init: {exc}") from None


def keep_best(best: dict | None, served, metrics: dict, epoch: int, step: int) -> dict:
    """The served weights (a CPU copy) if they beat the best validation PSNR so far: what
    `training.export --weights best` exports when a run peaks before it ends."""
    if not math.isfinite(metrics["psnr"]):  # diverged weights never replace the kept ones
        return best
    if best is not None and metrics["psnr"] <= best["validation"]["psnr"]:
        return best
    weights = {k: v.detach().to("cpu", copy=True) for k, v in served.state_dict().items()}
    return {"epoch": epoch, "step": step, "validation": dict(metrics), "model": weights}
