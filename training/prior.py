"""The latent distribution the service samples from: a Gaussian fitted to the photos' codes.

    python -m training.prior runs/NAME                                 # refit on the run's own training photos
    python -m training.prior runs/NAME --data M.csv --filter white_background=1   # or on these photos

Why: the KL term pulls each photo's code towards N(0, I), but it does not make the codes
fill N(0, I) (measured on the default model: the variances of the catalogue photos' codes
sum to about 36, N(0, I)'s to 256). Codes drawn from N(0, I) then land where no photo maps
to and decode to blurred mixtures, or, after training on street photos, to street scenes. Fitting a
full-covariance Gaussian to the posterior means of the training photos and sampling
from it ("ex-post density estimation", Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders") draws codes from where the photos are. The photos are
flipped and hue-rotated while fitting so the Gaussian covers cars of every colour, not
just the red ones most photos show. The service still draws u ~ N(0, I) and decodes
mean + temperature * L u, so the API is unchanged.

Training fits one at the end of every run and stores it in checkpoint.pt; this command
refits one, for instance on the catalogue photos of a run trained on every photo, or fits one
for a run stopped before its end. It fits the best weights' too, when the run kept them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from model.runtime import PRIOR_FILE
from training.vae import VAE
from training import checkpoint
from training.augment import augment


@torch.no_grad()
def encode_means(encoder, images: torch.Tensor, device, copies: int = 4, batch_size: int = 256,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Posterior means of uint8 images (N, 3, S, S): the photos as they are, then copies - 1
    randomly flipped and hue-rotated passes. Returns float64 (N * copies, latent_dim) on the CPU."""
    was_training = encoder.training
    encoder.eval()
    codes = []
    for copy in range(copies):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255.0)
            if copy:
                x = augment(x, generator=generator)
            codes.append(encoder(x)[0].double().cpu())
    encoder.train(was_training)
    return torch.cat(codes)


def fit_gaussian(codes: torch.Tensor) -> dict:
    """Mean and lower-triangular scale L (covariance = L L^T) of codes (N, D), as float32.

    A little ridge keeps the covariance positive definite when there are fewer codes than
    dimensions or a dimension the encoder never uses; it is grown until Cholesky succeeds."""
    codes = codes.double()
    if not torch.isfinite(codes).all():
        raise ValueError("the encoder's codes are not finite (NaN or inf): its weights have diverged")
    mean = codes.mean(0)
    dim = codes.shape[1]
    cov = torch.cov(codes.T).reshape(dim, dim) if len(codes) > 1 else torch.zeros(dim, dim, dtype=codes.dtype)
    ridge = 1e-5 * max(float(cov.diagonal().mean()), 1e-6)
    eye = torch.eye(dim, dtype=codes.dtype)
    for _ in range(12):  # finite codes need a few at most; never loop forever
        scale, info = torch.linalg.cholesky_ex(cov + ridge * eye)
        if int(info) == 0:
            return {"mean": mean.float(), "scale_tril": scale.float(), "codes": len(codes)}
        ridge *= 10
    raise ValueError(f"no Gaussian could be fitted to the {len(codes)} codes (covariance not positive definite)")


def fit(encoder, images: torch.Tensor, device, copies: int = 4, max_images: int | None = None, seed: int = 0,
        components: int = 1) -> dict:
    """Fit the sampling distribution (one Gaussian, or a mixture of `components`) to (up to
    max_images of) uint8 images (N, 3, S, S)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    if max_images is not None and len(images) > max_images:
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:max_images]
        images = images[pick.to(images.device)]
    codes = encode_means(encoder, images, device, copies, generator=generator)
    return fit_gaussian(codes) if components == 1 else fit_mixture(codes, components, seed)


def fit_final_and_best(vae: VAE, best: dict | None, step: int, fit_encoder) -> dict:
    """The sampling distribution of vae's weights (returned), and of the best weights a run kept
    (stored in best["latent_prior"]; the same one when they are the weights at `step`): what export
    ships with --weights final and --weights best. fit_encoder: encoder -> distribution."""
    final = fit_encoder(vae.encoder)
    if best and best["step"] == step:
        best["latent_prior"] = final
    elif best:
        best_vae = VAE(vae.cfg).to(next(vae.parameters()).device)
        best_vae.load_state_dict(best["model"])
        best["latent_prior"] = fit_encoder(best_vae.encoder)
    return final


def fit_mixture(codes: torch.Tensor, components: int, seed: int = 0, covariance: str = "full") -> dict:
    """A mixture of full-covariance Gaussians fitted to codes (N, D) by EM (scikit-learn): weights
    (K,), means (K, D) and lower-triangular scales (K, D, D), as float32.

    One Gaussian over every photo's code puts most of its mass between the cars, where the decoder
    draws blurred mixtures of them; each component here covers one kind of car (a pose, a body, a
    colour). The ridge added to every covariance (a tenth of the codes' mean variance) keeps each
    component a cloud around its photos rather than the thin slice through them that few codes in
    many dimensions would give: samples are new cars, not copies (benchmarks/perceptual.py's novelty)."""
    from sklearn.mixture import GaussianMixture

    codes = codes.double().numpy()
    if not np.isfinite(codes).all():
        raise ValueError("the encoder's codes are not finite (NaN or inf): its weights have diverged")
    if len(codes) < 2 * components:
        raise ValueError(f"{len(codes)} codes are too few for {components} mixture components")
    ridge = 0.1 * float(codes.var(0).mean())
    gm = GaussianMixture(components, covariance_type=covariance, reg_covar=ridge, max_iter=200, random_state=seed)
    gm.fit(codes)
    # "tied": one covariance shared by every component, stored once as (1, D, D).
    covariances = gm.covariances_[None] if covariance == "tied" else gm.covariances_
    return {"weights": torch.from_numpy(gm.weights_).float(), "means": torch.from_numpy(gm.means_).float(),
            "scale_trils": torch.from_numpy(np.linalg.cholesky(covariances)).float(), "codes": len(codes)}


def component_count(prior: dict) -> int:
    return len(prior["weights"]) if "weights" in prior else 1


def total_variance(prior: dict) -> float:
    """Trace of the fitted distribution's covariance: N(0, I) has latent_dim."""
    if "weights" not in prior:
        return float(prior["scale_tril"].pow(2).sum())
    w, means = prior["weights"].double(), prior["means"].double()
    within = (w * prior["scale_trils"].double().pow(2).sum((1, 2))).sum()  # a tied (1, D, D) broadcasts
    between = (w * (means - (w[:, None] * means).sum(0)).pow(2).sum(1)).sum()
    return float(within + between)


def latents(prior: dict | None, u: torch.Tensor, temperature: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Codes for standard-normal draws u (N, D): mean + temperature * L u of the Gaussian, or of a
    mixture component drawn by weight (seeded), or temperature * u without a prior."""
    if prior is None:
        return u * temperature
    if "weights" not in prior:
        mean, scale = prior["mean"].to(u.device), prior["scale_tril"].to(u.device)
        return mean + temperature * u @ scale.T
    k = torch.multinomial(prior["weights"].double(), len(u), replacement=True,
                          generator=torch.Generator().manual_seed(seed))
    scales = prior["scale_trils"][k if len(prior["scale_trils"]) > 1 else torch.zeros_like(k)]
    means, scales = prior["means"][k].to(u.device), scales.to(u.device)
    return means + temperature * torch.einsum("nij,nj->ni", scales, u)


def write(fitted: dict, folder: Path) -> dict:
    """latent_prior.npz in folder (model/prior.py reads it), and model.json's "latent" entry."""
    arrays = {k: fitted[k].numpy() for k in ("weights", "means", "scale_trils", "mean", "scale_tril") if k in fitted}
    if "scale_trils" in arrays:
        # Only the lower triangles, in half precision: a quarter of the file the Lambda ships (128
        # components: 8 MB, not 34). A sample moves by about 1e-3 of its spread, far below what the
        # decoder can show.
        scales = arrays["scale_trils"]
        arrays["scale_trils"] = scales[:, *np.tril_indices(scales.shape[-1])].astype(np.float16)
    np.savez(folder / PRIOR_FILE, **arrays)
    k = component_count(fitted)
    what = (f"mixture of {k} gaussians fitted to the training photos' codes" if k > 1
            else "gaussian fitted to the training photos' codes")
    return {"prior": what, "components": k, "encoder_outputs": ["mu", "logvar"], "prior_file": PRIOR_FILE,
            "prior_fitted_on": {"codes": fitted["codes"], "data": fitted.get("data"), "filter": fitted.get("filter", [])}}


def main(argv: list[str] | None = None) -> None:
    from training.data import DatasetError, load_dataset, warnings_printed
    from training.config import parse_filters, positive_int

    p = argparse.ArgumentParser(prog="python -m training.prior", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="training run folder (holds checkpoint.pt and config.json)")
    p.add_argument("--data", help="photos to fit on (default: the run's own --data)")
    p.add_argument("--filter", action="append", metavar="COLUMN=VALUE",
                   help="keep manifest rows where COLUMN equals VALUE (default: the run's own filters, when --data "
                   "is the run's own too)")
    p.add_argument("--copies", type=positive_int, default=4, help="passes over the photos: as they are, then augmented")
    p.add_argument("--components", type=positive_int, default=1,
                   help="Gaussians in the mixture (1: one Gaussian; the default model's: see its model.json)")
    args = p.parse_args(argv)
    run = Path(args.run)
    try:
        vae, state = checkpoint.load_vae(run)
        config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
        data_path = args.data or config.get("data")
        if not data_path:
            raise SystemExit(f"error: {run}/config.json names no data: pass --data")
        # The run's filters belong to the run's photos: other --data starts without them.
        own = config.get("filter", []) if args.data is None else []
        filters = parse_filters(args.filter if args.filter is not None else own)
        with warnings_printed():
            data = load_dataset(data_path, vae.cfg.image_size, filters, config.get("val_fraction", 0.1))
    except (checkpoint.CheckpointError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from None
    train = torch.from_numpy(data.train).permute(0, 3, 1, 2).contiguous()
    fitted_on = {"data": str(data_path), "filter": sorted(f"{k}={v}" for k, v in filters.items())}
    try:
        prior = fit_final_and_best(vae, state.get("best"), state["step"], lambda encoder: {
            **fit(encoder, train, torch.device("cpu"), copies=args.copies, components=args.components), **fitted_on})
    except ValueError as exc:
        raise SystemExit(f"error: {run}: {exc}") from None
    state["latent_prior"] = prior
    checkpoint.save_atomic(state, run / "checkpoint.pt")
    what = f"a mixture of {args.components} Gaussians" if args.components > 1 else "one Gaussian"
    print(f"fitted the sampling distribution of {run}, {what}, on {len(train)} photos x {args.copies} passes "
          f"({prior['codes']} codes; total variance {total_variance(prior):.1f}, N(0, I) has {vae.cfg.latent_dim})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
