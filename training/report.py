"""What a user looks at while a run trains: loss curves, sample grids, a progress GIF."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

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
