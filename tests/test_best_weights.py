"""The trainer keeps the weights of its best validation PSNR; export can ship them instead of the last."""
import json

import pytest

from tests.conftest import TINY_MODEL_FLAGS, needs_torch

pytestmark = needs_torch


def test_best_weights_are_kept_measured_and_exported(tmp_path, synthetic_dir):
    import numpy as np
    import torch

    from model.runtime import load_backend
    from training.vae import VAE, VAEConfig
    from training import checkpoint
    from training.data import load_dataset
    from training.export import export
    from training.metrics import evaluate
    from training.train import main

    run = tmp_path / "run"
    # A rate this high makes validation peak early (seeded, so the same every time).
    result = main(["--data", str(synthetic_dir), "--out", str(run), "--epochs", "8", "--lr", "3e-2", "--ema", "0",
                   *TINY_MODEL_FLAGS])
    state = checkpoint.load(run / "checkpoint.pt")
    curve = [h["val_psnr"] for h in state["history"]]
    best = state["best"]
    assert best["validation"]["psnr"] == max(curve) and best["epoch"] == 1 + curve.index(max(curve))
    assert best["epoch"] < 8, curve  # the case that matters: the run ended below its best
    assert result["best"]["epoch"] == best["epoch"] and result["best"]["psnr"] == best["validation"]["psnr"]

    # The kept weights are the ones that scored it, not the last ones.
    cfg = VAEConfig.from_dict(state["vae_config"])
    data = load_dataset(synthetic_dir, cfg.image_size)
    val = torch.from_numpy(data.val).permute(0, 3, 1, 2).contiguous()
    vae = VAE(cfg)
    vae.load_state_dict(best["model"])
    assert evaluate(vae, val, torch.device("cpu"))["psnr"] == pytest.approx(best["validation"]["psnr"], abs=1e-4)
    assert any(not torch.equal(best["model"][k], state["model"][k]) for k in best["model"])
    # ...with a sampling distribution fitted to their own codes.
    assert not torch.equal(best["latent_prior"]["mean"], state["latent_prior"]["mean"])

    meta = export(run, tmp_path / "model", weights="best")
    assert meta["metrics"]["psnr"] == best["validation"]["psnr"]
    assert meta["training"]["weights"].startswith(f"best validation PSNR, epoch {best['epoch']} of 8")
    z = np.random.default_rng(0).standard_normal((2, cfg.latent_dim)).astype(np.float32)
    with torch.no_grad():
        expected = vae.decoder(torch.from_numpy(z)).numpy()
    assert np.abs(load_backend(tmp_path / "model", "onnx").decode(z) - expected).max() < 1e-4
    prior = np.load(tmp_path / "model" / "latent_prior.npz")
    assert np.allclose(prior["mean"], best["latent_prior"]["mean"].numpy())
    assert json.loads((tmp_path / "model" / "model.json").read_text())["metrics"]["psnr"] == meta["metrics"]["psnr"]


def test_export_of_best_weights_names_a_checkpoint_that_has_none(tmp_path, tiny_run):
    import torch

    from training.export import main

    old = tmp_path / "old"
    old.mkdir()
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=False)
    del state["best"]  # as written before the trainer kept them
    torch.save(state, old / "checkpoint.pt")
    with pytest.raises(SystemExit, match="no best weights kept"):
        main([str(old), "--out", str(tmp_path / "model"), "--weights", "best"])


def test_curves_report_the_best_and_last_validation_points(tiny_run):
    from experiments.curves import curve
    from training import checkpoint

    result = curve(tiny_run)
    state = checkpoint.load(tiny_run / "checkpoint.pt")
    assert [p["epoch"] for p in result["validation"]] == [h["epoch"] for h in state["history"]]
    assert result["best"]["psnr"] == max(p["psnr"] for p in result["validation"])
    assert result["best"]["psnr"] == round(state["best"]["validation"]["psnr"], 3)  # the trainer's own choice
    assert result["last"] == result["validation"][-1] and result["config"]["out"] == str(tiny_run)
