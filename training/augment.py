"""Augmentation on batches already on the training device.

Horizontal flips, and hue rotation: most available photos are of red cars, but users
upload cars of every colour. Rotating hue in YIQ space turns the chroma plane while
keeping luminance, so a red car becomes a blue or green one and white and grey
(backgrounds, tyres, glass) stay exactly as they are.
Then a random zoom and shift (the trainer's --zoom 0.1 --shift 0.05 by default), filling
with white as the loader pads: users frame their cars less exactly than a catalogue does,
and a network that overfits its photos (the default model's GPU run did, after 200 epochs)
is helped by seeing each one framed a little differently every time: +1.8 dB on a 64 px
pilot, +0.3 dB fine-tuning the default (experiments/README.md, "A random zoom and shift against overfitting").
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch.nn import functional as F

_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
# As Python numbers too: a compiled graph makes a tensor built from them a constant on the device,
# where the module's CPU tensors would become graph inputs copied to the GPU (and waited for) every step.
_RGB_TO_YIQ_ROWS, _YIQ_TO_RGB_ROWS = _RGB_TO_YIQ.tolist(), _YIQ_TO_RGB.tolist()


@lru_cache(maxsize=8)
def _cached_yiq_matrices(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per device: a copy from host memory each step would make the GPU wait for the CPU.
    return _RGB_TO_YIQ.to(device, dtype), _YIQ_TO_RGB.to(device, dtype)


def _yiq_matrices(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    if torch.compiler.is_compiling():  # a compiled graph holds them as constants: no cache to trace
        return (torch.tensor(_RGB_TO_YIQ_ROWS, device=device, dtype=dtype),
                torch.tensor(_YIQ_TO_RGB_ROWS, device=device, dtype=dtype))
    return _cached_yiq_matrices(device, dtype)


def hue_rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(B,) angles in radians -> (B, 3, 3) RGB->RGB matrices rotating hue by each angle."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    rot = torch.zeros(angles.shape[0], 3, 3, device=angles.device, dtype=angles.dtype)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    to_yiq, to_rgb = _yiq_matrices(angles.device, angles.dtype)
    return to_rgb @ rot @ to_yiq


def rotate_hue(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1] -> hue-rotated, clamped to [0, 1]."""
    mats = hue_rotation_matrices(angles.to(torch.float32)).to(x.dtype)
    return torch.einsum("bij,bjhw->bihw", mats, x).clamp_(0.0, 1.0)


def zoom_and_shift(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1]; scale (B,) > 1 enlarges the picture; shift (B, 2) in fractions of
    the image (x, y). Bilinear; what comes in from outside the picture is white."""
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = -2.0 * shift / scale[:, None]  # grid coordinates span [-1, 1]: twice the fraction
    grid = F.affine_grid(theta, list(x.shape), align_corners=False).to(x.dtype)
    # Sampling 1 - x pads with zeros, which is white once flipped back.
    return 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(x: torch.Tensor, flip: bool = True, hue_prob: float = 0.8, generator: torch.Generator | None = None,
            zoom: float = 0.0, shift: float = 0.0):
    """Randomly flip and hue-rotate a float batch (B, 3, H, W) in [0, 1]; with zoom/shift > 0,
    also scale it by a factor in [1 - zoom, 1 + zoom] and move it by up to shift of its size."""
    b = x.shape[0]
    if zoom > 0 or shift > 0:
        scale = 1.0 + zoom * (2 * torch.rand(b, device=x.device, generator=generator) - 1)
        offset = shift * (2 * torch.rand(b, 2, device=x.device, generator=generator) - 1)
        x = zoom_and_shift(x, scale, offset)
    if flip:
        mask = torch.rand(b, device=x.device, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if hue_prob > 0:
        rotate = torch.rand(b, device=x.device, generator=generator) < hue_prob
        angles = torch.rand(b, device=x.device, generator=generator) * 2 * math.pi * rotate
        x = rotate_hue(x, angles)
    return x
