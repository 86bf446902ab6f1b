"""What a user looks at while a run trains: the progress bar and its time left, loss curves,
sample grids, a progress GIF, and at the end the run's summary (metrics.json)."""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from tqdm import tqdm  # noqa: E402

from training import prior  # noqa: E402
from training.devices import to_float  # noqa: E402
from training.schedule import Schedule, duration, time_left  # noqa: E402

LABEL_WIDTH = 84


def as_rows(images: torch.Tensor) -> np.ndarray:
    """A float batch (B, 3, H, W) in [0, 1], on any device -> uint8 (B, H, W, 3) for image_grid."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(rows: list[tuple[str, np.ndarray]], pad: int = 2) -> Image.Image:
    """rows: (label, uint8 array (N, H, W, 3)) -> one picture, a labelled row each."""
    cols = max(len(images) for _, images in rows)
    size = rows[0][1].shape[1]
    width = LABEL_WIDTH + cols * (size + pad) + pad
    height = len(rows) * (size + pad) + pad
    canvas = Image.new("RGB", (width, height), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        top = pad + r * (size + pad)
        lines = _wrap(draw, label, LABEL_WIDTH - 8)
        draw.multiline_text((6, top + size // 2 - 6 * len(lines)), "\n".join(lines), fill=(230, 230, 230))
        for c, image in enumerate(images):
            canvas.paste(Image.fromarray(image), (LABEL_WIDTH + pad + c * (size + pad), top))
    return canvas


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    """Words to lines no wider than width pixels (a longer word keeps its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines or [""]


def save_gif(frames: list[Path], out: Path, ms_per_frame: int = 400) -> None:
    if not frames:
        return
    images = [Image.open(f).convert("RGB") for f in frames]
    # Hold the last frame so the result is visible before the loop restarts.
    durations = [ms_per_frame] * (len(images) - 1) + [ms_per_frame * 5]
    images[0].save(out, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=True)


def plot_losses(history: list[dict], out: Path) -> None:
    """history: one dict per epoch with train_loss, train_recon, train_kl and optional val_psnr."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train loss")
    axes[0].plot(epochs, [h["train_recon"] for h in history], label="train MSE")
    val = [(h["epoch"], h["val_mse"]) for h in history if "val_mse" in h]
    if val:
        axes[0].plot(*zip(*val), "o-", label="val MSE")
    axes[0].set_yscale("log")
    axes[0].set_title("loss (per pixel)")
    axes[1].plot(epochs, [h["train_kl"] for h in history], color="tab:purple")
    axes[1].set_title("KL (nats per image)")
    psnr = [(h["epoch"], h["val_psnr"]) for h in history if "val_psnr" in h]
    if psnr:
        axes[2].plot(*zip(*psnr), "o-", color="tab:green")
    axes[2].set_title("validation PSNR (dB)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


class ProgressBar:
    """tqdm's bar over the whole run: steps of --epochs, or, when a --max-time can end the run first,
    per cent of the run's progress (the further of its steps and its clock), so the bar moves toward
    the time limit whichever comes first. Its postfix carries the time left; `eta_line` says it in words."""

    def __init__(self, schedule: Schedule, step: int, elapsed: float, enabled: bool):
        self.schedule, self.by_clock = schedule, bool(schedule.max_time)
        self.since = (step, elapsed)  # this session's start: its pace is what the estimate follows
        self.told = not enabled  # only the bar that shows says the estimate (rank 0's)
        total, initial = (100.0, self._percent(step, elapsed)) if self.by_clock else (schedule.total_steps, step)
        fmt = ("{desc}{percentage:3.0f}%|{bar}| {elapsed}{postfix}" if self.by_clock else
               "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]")
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, bar_format=fmt)
        self.write = self.bar.write

    def _percent(self, step: int, elapsed: float) -> float:
        return round(100.0 * self.schedule.progress(step, elapsed), 2)

    def update(self, step: int, elapsed: float) -> None:
        if self.by_clock:
            self.bar.update(self._percent(step, elapsed) - self.bar.n)
        else:
            self.bar.update(step - self.bar.n)

    def show(self, epoch: int, epochs: int, stats: str, step: int, elapsed: float) -> None:
        left = time_left(self.schedule, step, elapsed, self.since)
        self.bar.set_description(f"epoch {epoch}/{epochs}")
        self.bar.set_postfix_str(stats + ("" if left is None else f", {duration(left)} left"))
        if not self.told and left is not None and elapsed - self.since[1] >= 10:
            self.told = True  # once the pace is known: a line that stays when the bar moves on
            self.write(self.eta_line(step, elapsed))

    def left(self, step: int, elapsed: float) -> str:
        """', about 12 min left' at this session's pace, or nothing before it is known."""
        left = time_left(self.schedule, step, elapsed, self.since)
        return "" if left is None else f", about {duration(left)} left"

    def eta_line(self, step: int, elapsed: float) -> str:
        left = time_left(self.schedule, step, elapsed, self.since)
        if left is None:
            return ""
        ends = time.strftime("%H:%M", time.localtime(time.time() + left))
        return f"estimated time left: {duration(left)} (ends about {ends})"

    def close(self) -> None:
        self.bar.close()


def plan_line(schedule: Schedule, epochs: int, steps_per_epoch: int, step: int) -> str:
    """What the run will do, said when it starts: its length in epochs and steps, and its time limit."""
    limit = f", or {duration(schedule.max_time)} (--max-time), whichever comes first" if schedule.max_time else ""
    start = f" from step {step:,}" if step else ""
    return (f"training {epochs} epochs of {steps_per_epoch:,} steps ({schedule.total_steps:,} steps{start}){limit}; "
            "the time left shows once the first steps are timed")


def frame_path(out: Path, epoch: int, batches_done: int) -> Path:
    """A sample grid's file: samples/epoch_NNNN.png, or, for an epoch cut short (Ctrl-C, --max-time),
    samples/epoch_NNNN_BBBBB.png with the batches it got through: after the last whole epoch's, before its own."""
    name = f"epoch_{epoch:04d}_{batches_done:05d}.png" if batches_done else f"epoch_{epoch:04d}.png"
    return out / "samples" / name


@torch.no_grad()
def sample_grid(encoder, decoder, val: torch.Tensor, u: torch.Tensor, fitted: dict, device, path: Path) -> None:
    """Validation photos and their reconstructions, then the same draws u decoded as N(0, I) codes
    and as codes of the distribution fitted to the photos (what the service will sample)."""
    modes = [(m, m.training) for m in (encoder, decoder)]
    for m, _ in modes:
        m.eval()
    x = to_float(val[: u.shape[0]], device)
    recon = decoder(encoder(x)[0])
    u = u.to(device)
    standard, from_fit = decoder(u), decoder(prior.latents(fitted, u))
    for m, training in modes:
        m.train(training)
    image_grid([
        ("photo", as_rows(x)),
        ("recon", as_rows(recon)),
        ("N(0,I)", as_rows(standard)),
        ("fitted", as_rows(from_fit)),
    ]).save(path)


def run_summary(s, run, metrics: dict, mean_psnr: float, *, images: int, skipped: int, epochs, rate: float,
                device, precision: str, world: int, model: dict, loss: dict, latent_prior: dict,
                validation_images: int) -> dict:
    """metrics.json: the last weights' validation numbers (with the mean-image baseline), how the run
    trained, its best weights, model, loss and sampling distribution."""
    return {
        "validation": {**metrics, "images": validation_images, "mean_image_psnr": mean_psnr},
        "training": {"images": images, "skipped": skipped, "epochs": epochs, "steps": run.step,
                     "seconds": round(run.elapsed, 1), "images_per_second": round(rate, 1),
                     "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "precision": precision, "ema": s.ema or 0.0, "world_size": world, "data": str(s.data),
                     "filter": s.filter, "val_filter": s.val_filter, "init": s.init},
        "best": {"epoch": run.best["epoch"], "step": run.best["step"], **run.best["validation"]},
        "model": model,
        "loss": loss,
        "sampling": {"prior": "gaussian fitted to the training photos' codes", "codes": latent_prior["codes"],
                     "total_variance": round(prior.total_variance(latent_prior), 2)},
    }
