"""The VAE loss: reconstruction + beta * KL, with KL warm-up and free bits.

Everything is expressed per pixel (divided by C*H*W) so numbers are comparable across
image sizes. Two KL normalisations:
- "image" (default): each image's KL, summed over latent dimensions, weighted by beta
  against the reconstruction error summed over that image's pixels — the beta-VAE ELBO.
- "original": the original project's formula, KL summed over the batch and divided by
  batch*C*H*W, added to the mean MSE. It is the same as "image" with beta = 1, MSE only,
  no warm-up and no free bits. Measured at 64 px (benchmarks/results/loss_variants_cpu.json)
  it gives the most car-like samples and about 1 dB less validation PSNR than beta 0.3.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F

from training.metrics import ssim

KL_NORMS = ("image", "original")


@dataclass(frozen=True)
class LossConfig:
    beta: float = 0.1
    kl_norm: str = "image"
    l1_weight: float = 0.0  # adds |x - x_hat| to the per-pixel squared error
    ssim_weight: float = 0.0  # adds weight * (1 - SSIM) per pixel
    free_bits: float = 0.0  # nats per latent dimension the KL is not pushed below
    warmup: float = 0.0  # beta rises linearly from 0 over this fraction of training

    def __post_init__(self):
        if self.kl_norm not in KL_NORMS:
            raise ValueError(f"kl_norm must be one of {KL_NORMS}")

    def to_dict(self) -> dict:
        return asdict(self)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) for each sample and latent dimension, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def beta_at(cfg: LossConfig, progress: float) -> float:
    """progress: fraction of training done, in [0, 1]."""
    if cfg.kl_norm == "original":
        return 1.0
    if cfg.warmup <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, progress / cfg.warmup)


def vae_loss(x, recon, mu, logvar, cfg: LossConfig, progress: float = 1.0):
    """Returns (loss, parts) where parts holds floats-to-be: recon, kl (nats per image), beta."""
    recon_term, kl_term, parts = loss_terms(x, recon, mu, logvar, cfg)
    beta = beta_at(cfg, progress)
    return recon_term + beta * kl_term, {**parts, "beta": beta}


def loss_terms(x, recon, mu, logvar, cfg: LossConfig):
    """The loss before the KL weight: (reconstruction term, KL term, parts), the loss being
    recon_term + beta_at(cfg, progress) * kl_term. Kept apart so that what --compile compiles does
    not depend on beta, which changes every step of the warm-up."""
    x, recon, mu, logvar = x.float(), recon.float(), mu.float(), logvar.float()
    pixels = x[0].numel()
    mse = F.mse_loss(recon, x)
    kl_dims = kl_per_dim(mu, logvar)
    kl_image = kl_dims.sum(1).mean()
    parts = {"recon": mse.detach(), "kl": kl_image.detach()}
    if cfg.kl_norm == "original":  # KL summed over the batch / (batch * C * H * W): kl_image / pixels; beta 1
        return mse, kl_image / pixels, parts

    recon_term = mse
    if cfg.l1_weight:
        recon_term = recon_term + cfg.l1_weight * F.l1_loss(recon, x)
    if cfg.ssim_weight:
        recon_term = recon_term + cfg.ssim_weight * (1.0 - ssim(recon, x).mean())
    if cfg.free_bits:
        # Free bits per dimension on the batch average: dimensions below the floor get no push.
        kl_term = kl_dims.mean(0).clamp(min=cfg.free_bits).sum()
    else:
        kl_term = kl_image
    return recon_term, kl_term / pixels, parts
