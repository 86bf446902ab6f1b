"""Image-quality metrics on batches in [0, 1] (MSE, PSNR and SSIM, per image), and a model's
validation numbers with them: what the trainer logs and metrics.json keeps."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from training.devices import to_float


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


@torch.no_grad()
def evaluate(vae, images: torch.Tensor, device, batch_size: int = 64) -> dict:
    """Validation metrics with deterministic reconstructions (posterior mean), in float32."""
    vae.eval()
    metrics = reconstruction_metrics(vae.encoder, vae.decoder, images, device, batch_size)
    vae.train()
    return metrics


@torch.no_grad()
def reconstruction_metrics(encode, decode, images: torch.Tensor, device, batch_size: int = 64) -> dict:
    """Mean per-image MSE, PSNR, SSIM and KL of uint8 images (N, 3, S, S) reconstructed from the
    posterior mean: encode(x) -> (mu, logvar), decode(mu); also for an exported model's runtime."""
    sums = {"mse": 0.0, "psnr": 0.0, "ssim": 0.0, "kl": 0.0}
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size], device)
        mu, logvar = encode(x)
        recon = decode(mu)
        sums["mse"] += mse_per_image(recon, x).sum().item()
        sums["psnr"] += psnr_per_image(recon, x).sum().item()
        sums["ssim"] += ssim(recon, x).sum().item()
        sums["kl"] += (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum().item()
    return {k: v / len(images) for k, v in sums.items()}


def mean_image_psnr(train: torch.Tensor, val: torch.Tensor, chunk: int = 64) -> float:
    """The baseline any model must beat: predict the average training image for every photo."""
    # Summed a chunk at a time: a float copy of the whole set could be 4x a dataset kept on the GPU.
    total = sum(train[i : i + chunk].double().sum(0) for i in range(0, len(train), chunk))
    mean = (total / (len(train) * 255.0)).float().unsqueeze(0)
    return psnr_per_image(mean.expand(len(val), -1, -1, -1), val.float() / 255.0).mean().item()
