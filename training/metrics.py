"""Image-quality metrics on batches in [0, 1]: MSE, PSNR and SSIM, per image."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.log10(1.0 / mse_per_image(a, b).clamp(min=1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """SSIM per image (Wang et al. 2004: Gaussian window 11, sigma 1.5), averaged over channels."""
    a, b = a.float(), b.float()
    channels = a.shape[1]
    kernel = _gaussian_window(window, device=a.device).expand(channels, 1, window, window)

    def blur(t):
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.pow(2)
    var_b = blur(b * b) - mu_b.pow(2)
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a.pow(2) + mu_b.pow(2) + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(1)
