"""The sampling distribution: a Gaussian, or a mixture of Gaussians, fitted to the training photos'
codes, carried by the export into the service, which draws a component by weight and then
mean + temperature * L u."""
import hashlib
import json
import shutil

import numpy as np
import pytest

from model.runtime import Model, ModelError
from tests.conftest import needs_torch


@needs_torch
def test_fit_recovers_a_known_gaussian():
    import torch

    from training.prior import fit_gaussian

    g = torch.Generator().manual_seed(0)
    mean = torch.randn(6, generator=g, dtype=torch.float64)
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64)
    codes = mean + torch.randn(40_000, 6, generator=g, dtype=torch.float64) @ mix.T
    fitted = fit_gaussian(codes)
    scale = fitted["scale_tril"].double()
    assert torch.equal(scale, scale.tril()), "lower triangular"
    assert torch.allclose(fitted["mean"].double(), mean, atol=0.05)
    assert torch.allclose(scale @ scale.T, mix @ mix.T, atol=0.1 * float((mix @ mix.T).abs().max()))
    assert fitted["codes"] == 40_000


@needs_torch
@pytest.mark.parametrize("count", [1, 3, 15])
def test_fit_survives_fewer_codes_than_dimensions(count):
    import torch

    from training.prior import fit_gaussian, latents

    codes = torch.randn(count, 16, generator=torch.Generator().manual_seed(count), dtype=torch.float64)
    fitted = fit_gaussian(codes)
    assert torch.isfinite(fitted["scale_tril"]).all() and (fitted["scale_tril"].diagonal() > 0).all()
    z = latents(fitted, torch.randn(100, 16))
    assert torch.isfinite(z).all()


@needs_torch
def test_augmented_passes_give_codes_of_other_colours():
    """Why the fit sees flipped and hue-rotated copies: photos of red cars alone would give a
    Gaussian of red cars. An encoder whose code is the mean colour shows what the fit receives."""
    import torch

    from training.prior import encode_means

    class MeanColour(torch.nn.Module):
        def forward(self, x):
            colour = x.mean((2, 3))
            return colour, torch.zeros_like(colour)

    red = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    red[:, 0] = 200
    red[:, 1:] = 30
    codes = encode_means(MeanColour(), red, torch.device("cpu"), copies=4,
                         generator=torch.Generator().manual_seed(0))
    assert codes.shape == (256, 3)
    assert (codes[:64].argmax(1) == 0).all(), "the first pass is the photos as they are"
    not_red = (codes[64:].argmax(1) != 0).float().mean()
    assert not_red > 0.3, f"only {not_red:.0%} of augmented codes are not red"


def test_service_samples_the_fitted_distribution(tiny_model_dir):
    model = Model(tiny_model_dir, "onnx")
    assert model.prior.components == 1
    mean, scale = model.prior.means[0], model.prior.scale_trils[0]
    z = model.sample_codes(np.random.default_rng(0), 50_000, temperature=0.5)
    assert np.abs(z.mean(0) - mean).max() < 0.02 * max(1.0, np.abs(mean).max())
    cov = 0.25 * scale @ scale.T
    assert np.abs(np.cov(z.T) - cov).max() < 0.05 * np.abs(cov).max()


def test_a_format_1_prior_draws_the_codes_it_always_drew(tiny_model_dir):
    """The same seed, the same cars: mean + T * L u with u the seed's first standard-normal draws."""
    model = Model(tiny_model_dir, "onnx")
    with np.load(tiny_model_dir / "latent_prior.npz") as arrays:
        mean, scale = arrays["mean"], arrays["scale_tril"]
    u = np.random.default_rng(7).standard_normal((5, model.latent_dim))
    expected = (mean + 0.8 * (u @ scale.T)).astype(np.float32)
    assert np.allclose(model.sample_codes(np.random.default_rng(7), 5, 0.8), expected, atol=1e-6)


def _mixture_model(tiny_model_dir, tmp_path, weights, means, scales):
    def edit(folder, meta):
        np.savez(folder / "latent_prior.npz", weights=weights, means=means, scale_trils=scales)
        _rehash(folder, meta)
        meta["format_version"] = 2
    return Model(_copy_with(tiny_model_dir, tmp_path, edit), "onnx")


@pytest.mark.parametrize("tied", [False, True])
def test_the_service_samples_a_mixture_by_its_weights(tiny_model_dir, tmp_path, tied):
    d = 16
    means = np.stack([np.full(d, -5.0), np.full(d, 5.0)]).astype(np.float32)
    scales = np.stack([0.1 * np.eye(d)] * (1 if tied else 2)).astype(np.float16)  # half precision, unpacked (write packs them: test below)
    model = _mixture_model(tiny_model_dir, tmp_path, np.array([0.25, 0.75], np.float32), means, scales)
    assert model.prior.components == 2
    z = model.sample_codes(np.random.default_rng(0), 4000, temperature=1.0)
    upper = z.mean(1) > 0
    assert abs(upper.mean() - 0.75) < 0.03, "components drawn by weight"
    assert np.abs(z[upper] - 5.0).max() < 1.0 and np.abs(z[~upper] + 5.0).max() < 1.0, "each code near its mean"
    cold = model.sample_codes(np.random.default_rng(1), 50, temperature=0.0)
    assert set(np.round(cold[:, 0])) <= {-5.0, 5.0}, "temperature 0 draws the components' means"
    again = model.sample_codes(np.random.default_rng(0), 4000, temperature=1.0)
    assert np.array_equal(z, again), "a seed gives the same codes"


@pytest.mark.parametrize("weights", [np.array([0.5, 0.6]), np.array([-0.5, 1.5])])
def test_mixture_weights_that_are_no_distribution_are_refused(tiny_model_dir, tmp_path, weights):
    d = 16
    with pytest.raises(ModelError, match="weights are not a distribution"):
        _mixture_model(tiny_model_dir, tmp_path, weights.astype(np.float32), np.zeros((2, d), np.float32),
                       np.stack([np.eye(d)] * 2).astype(np.float32))


@needs_torch
def test_a_mixture_fit_finds_separate_clusters_and_export_serves_it(tmp_path):
    import torch

    from training.prior import fit_mixture, latents, total_variance
    from training.prior import write as write_prior

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-4.0] * 6, [0.0] * 6, [4.0] * 6], dtype=torch.float64)
    codes = torch.cat([c + 0.3 * torch.randn(1000, 6, generator=g, dtype=torch.float64) for c in centres])
    tied = fit_mixture(codes, 3, covariance="tied")
    assert tied["scale_trils"].shape == (1, 6, 6), "one covariance, stored once"
    assert latents(tied, torch.randn(10, 6)).shape == (10, 6)
    fitted = fit_mixture(codes, 3)
    order = fitted["means"][:, 0].argsort()
    assert torch.allclose(fitted["means"][order].double(), centres, atol=0.1)
    assert torch.allclose(fitted["weights"], torch.full((3,), 1 / 3), atol=0.02)
    z = latents(fitted, torch.randn(20_000, 6, generator=g, dtype=torch.float64).float())
    assert abs(total_variance(fitted) - float(z.double().var(0).sum())) < 0.05 * total_variance(fitted)
    assert (z.mean(1).abs() < 6).all() and z[:, 0].std() > 2, "grid codes come from every component"

    meta = write_prior(fitted, tmp_path)
    assert meta["components"] == 3 and meta["prior_file"] == "latent_prior.npz"
    from model import prior as runtime_prior

    served = runtime_prior.load(tmp_path / "latent_prior.npz", 6)
    assert np.allclose(served.means, fitted["means"].numpy()) and np.allclose(served.weights.sum(), 1.0)
    with np.load(tmp_path / "latent_prior.npz") as arrays:
        assert arrays["scale_trils"].shape == (3, 21) and arrays["scale_trils"].dtype == np.float16, "packed, half"
    assert np.allclose(served.scale_trils, fitted["scale_trils"].numpy(), rtol=2e-3, atol=1e-4)


def test_temperature_zero_decodes_the_mean_code(tiny_model_dir):
    from model import inference
    from model.images import from_model_output, png_base64

    model = Model(tiny_model_dir, "onnx")
    out = inference.sample(model, n=3, seed=5, temperature=0)
    assert len(set(out["images"])) == 1
    expected = png_base64(from_model_output(model.decode(model.prior.means[:1].astype(np.float32)))[0])
    assert out["images"][0] == expected


def _copy_with(tiny_model_dir, tmp_path, edit):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "model.json").read_text())
    edit(folder, meta)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def _rehash(folder, meta, name="latent_prior.npz"):
    meta["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_a_model_without_a_prior_samples_the_standard_normal(tiny_model_dir, tmp_path):
    def drop(folder, meta):
        (folder / "latent_prior.npz").unlink()
        del meta["files"]["latent_prior.npz"], meta["latent"]["prior_file"]
        meta["latent"]["prior"] = "standard normal"

    model = Model(_copy_with(tiny_model_dir, tmp_path, drop), "onnx")
    assert model.prior is None
    u = np.random.default_rng(0).standard_normal((4, model.latent_dim))
    assert np.allclose(model.sample_codes(np.random.default_rng(0), 4, 0.7), (u * 0.7).astype(np.float32))


@pytest.mark.parametrize("damage, message", [
    ("truncate", "latent_prior.npz is corrupt"),
    ("missing", "latent_prior.npz is missing"),
    ("wrong shape", "does not match latent size 16"),
    ("not finite", "not finite"),
    ("path in model.json", "unknown prior file"),
])
def test_a_damaged_prior_is_refused_with_its_name(tiny_model_dir, tmp_path, damage, message):
    def edit(folder, meta):
        path = folder / "latent_prior.npz"
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[:100])
        elif damage == "missing":
            path.unlink()
        elif damage == "wrong shape":
            np.savez(path, mean=np.zeros(8, np.float32), scale_tril=np.eye(8, dtype=np.float32))
            _rehash(folder, meta)
        elif damage == "not finite":
            np.savez(path, mean=np.full(16, np.nan, np.float32), scale_tril=np.eye(16, dtype=np.float32))
            _rehash(folder, meta)
        else:
            meta["latent"]["prior_file"] = "../../model.json"

    with pytest.raises(ModelError, match=message):
        Model(_copy_with(tiny_model_dir, tmp_path, edit), "onnx")


@needs_torch
def test_refit_cli_stores_a_prior_fitted_on_other_photos(tmp_path, tiny_run, synthetic_dir, real_photos):
    from training import checkpoint
    from training.prior import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = checkpoint.load(run / "checkpoint.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, path in enumerate(real_photos * 2):
        shutil.copy(path, photos / f"{i}{path.suffix}")
    main([str(run), "--data", str(photos), "--copies", "2"])
    after = checkpoint.load(run / "checkpoint.pt")
    assert after["latent_prior"]["data"] == str(photos)
    assert after["latent_prior"]["codes"] == 2 * 11  # 12 photos, one held out for validation
    assert not np.allclose(after["latent_prior"]["mean"].numpy(), before["latent_prior"]["mean"].numpy())
    import torch

    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items()), "weights survive a refit"
    assert (after["epoch"], after["history"]) == (before["epoch"], before["history"])

    with pytest.raises(SystemExit, match="nowhere"):
        main([str(tmp_path / "nowhere")])


@needs_torch
def test_refitting_on_other_photos_leaves_the_runs_own_filter_behind(tmp_path, tiny_run, real_photos):
    """A run trained on a filtered manifest, refit on a folder: its filter belonged to its photos."""
    from training.prior import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "filter": ["white_background=1"]}))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, path in enumerate(real_photos * 2):
        shutil.copy(path, photos / f"{i}{path.suffix}")
    main([str(run), "--data", str(photos), "--copies", "1", "--components", "2"])
    from training import checkpoint

    fitted = checkpoint.load(run / "checkpoint.pt")["latent_prior"]
    assert fitted["filter"] == [] and len(fitted["weights"]) == 2
