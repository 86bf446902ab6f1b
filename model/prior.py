"""The distribution the service draws codes from, in numpy (the Lambda has no torch).

A mixture of full-covariance Gaussians fitted to the training photos' codes (training/prior.py).
One Gaussian over all the codes puts most of its mass between the cars, where the decoder draws
blurred mixtures; a mixture puts it where the cars are. A format-1 model's single Gaussian is the
one-component case and draws exactly what it always drew.

latent_prior.npz holds either `mean` (D,) and `scale_tril` (D, D) (format 1), or `weights` (K,),
`means` (K, D) and `scale_trils` (K, D, D), or (1, D, D) for one covariance tied to every component,
or (K, D(D+1)/2) for each lower triangle packed row by row, which is how training.prior writes them
(format 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PriorError(ValueError):
    """The prior file cannot be used; the message names what is wrong."""


@dataclass(frozen=True)
class Mixture:
    weights: np.ndarray  # (K,), summing to 1
    means: np.ndarray  # (K, D)
    scale_trils: np.ndarray  # (K, D, D): covariance_k = L_k L_k^T; or (1, D, D), one tied to all

    @property
    def components(self) -> int:
        return len(self.weights)

    def sample(self, rng: np.random.Generator, n: int, temperature: float = 1.0) -> np.ndarray:
        """n codes (n, D) float32: a component by its weight, then its mean + temperature * L u,
        u ~ N(0, I). The draws come from rng in a fixed order, so a seed always gives the same codes."""
        u = rng.standard_normal((n, self.means.shape[1]))
        # One component draws no index: a format-1 model's seeds give the cars they always gave.
        k = rng.choice(self.components, size=n, p=self.weights) if self.components > 1 else np.zeros(n, dtype=int)
        scales = self.scale_trils[k if len(self.scale_trils) > 1 else np.zeros_like(k)]  # tied: one for all
        return (self.means[k] + temperature * np.einsum("nij,nj->ni", scales, u)).astype(np.float32)


def unpack_lower(packed: np.ndarray, dim: int) -> np.ndarray:
    """(K, D(D+1)/2) lower triangles, row by row (numpy's tril_indices order) -> (K, D, D)."""
    full = np.zeros((len(packed), dim, dim), np.float32)
    full[:, *np.tril_indices(dim)] = packed
    return full


def standard_normal(latent_dim: int) -> Mixture:
    """N(0, I): what a model without a prior file samples."""
    return Mixture(np.ones(1), np.zeros((1, latent_dim)), np.eye(latent_dim)[None])


def load(path: Path, latent_dim: int) -> Mixture:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "weights" in arrays.files:
                weights, means, scales = arrays["weights"], arrays["means"], arrays["scale_trils"]
            else:
                weights, means, scales = np.ones(1), arrays["mean"][None], arrays["scale_tril"][None]
    except (OSError, KeyError, ValueError) as exc:
        raise PriorError(f"{path.name} is unreadable ({exc.__class__.__name__})") from None
    if scales.ndim == 2 and scales.shape[1] == latent_dim * (latent_dim + 1) // 2:
        scales = unpack_lower(scales, latent_dim)
    k = len(weights)
    if (weights.ndim != 1 or k < 1 or means.shape != (k, latent_dim)
            or scales.shape not in ((k, latent_dim, latent_dim), (1, latent_dim, latent_dim))):
        raise PriorError(f"{path.name} does not match latent size {latent_dim}")
    # float32 in memory: 128 components of 256 x 256 take 34 MB, not 67.
    weights, means, scales = weights.astype(np.float64), means.astype(np.float32), scales.astype(np.float32)
    if not all(np.isfinite(a).all() for a in (weights, means, scales)):
        raise PriorError(f"{path.name} holds values that are not finite")
    if (weights < 0).any() or not np.isclose(weights.sum(), 1.0, atol=1e-4):
        raise PriorError(f"{path.name}: the mixture weights are not a distribution")
    return Mixture(weights / weights.sum(), means, scales)
