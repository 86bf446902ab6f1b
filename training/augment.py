"""Augmentation on batches already on the training device.

Horizontal flips, and hue rotation: most available photos are of red cars, but users
upload cars of every colour. Rotating hue in YIQ space turns the chroma plane while
keeping luminance, so a red car becomes a blue or green one and white and grey
(backgrounds, tyres, glass) stay exactly as they are.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@lru_cache(maxsize=8)
def _yiq_matrices(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per device: a copy from host memory each step would make the GPU wait for the CPU.
    return _RGB_TO_YIQ.to(device, dtype), _YIQ_TO_RGB.to(device, dtype)


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


def augment(x: torch.Tensor, flip: bool = True, hue_prob: float = 0.8, generator: torch.Generator | None = None):
    """Randomly flip and hue-rotate a float batch (B, 3, H, W) in [0, 1]."""
    b = x.shape[0]
    if flip:
        mask = torch.rand(b, device=x.device, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if hue_prob > 0:
        rotate = torch.rand(b, device=x.device, generator=generator) < hue_prob
        angles = torch.rand(b, device=x.device, generator=generator) * 2 * math.pi * rotate
        x = rotate_hue(x, angles)
    return x
