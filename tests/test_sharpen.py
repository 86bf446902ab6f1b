"""training.sharpen: the decoder fine-tune against blur (encoder frozen), on a tiny real run."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, needs_torch

pytestmark = needs_torch
FAST = ["--steps", "6", "--batch-size", "4", "--disc-start", "2", "--eval-every", "3", "--perceptual-size", "64",
        "--disc-channels", "8"]


@pytest.fixture(scope="module")
def sharpened(tmp_path_factory, tiny_run, synthetic_dir):
    from training.sharpen import main

    out = tmp_path_factory.mktemp("sharpen") / "run"
    result = main(["--init", str(tiny_run), "--data", str(synthetic_dir), "--out", str(out), *FAST])
    return out, result


def test_only_the_decoder_learns_and_the_run_exports(sharpened, tiny_run, tmp_path):
    import torch

    from model.runtime import Model
    from training import checkpoint
    from training.export import export

    out, result = sharpened
    before, after = checkpoint.load(tiny_run / "checkpoint.pt"), checkpoint.load(out / "checkpoint.pt")
    encoder = [k for k in before["model"] if k.startswith("encoder.")]
    decoder = [k for k in before["model"] if k.startswith("decoder.")]
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in encoder), "the encoder is frozen"
    assert any(not torch.equal(before["model"][k], after["model"][k]) for k in decoder), "the decoder learned"
    assert after["latent_prior"]["codes"] == before["latent_prior"]["codes"], "its codes, so its prior, are kept"
    assert result["training"]["steps"] == 6 and np.isfinite(result["validation"]["psnr"])
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]

    meta = export(out, tmp_path / "model")
    assert meta["training"]["stage"] == "sharpen" and meta["loss"]["sharpen"]["perceptual"] == "efficientnet-lite1"
    # The first stage's record travels on: the encoder's loss (its beta) and its training.
    assert meta["loss"]["beta"] == before["loss_config"]["beta"] and meta["training"]["first_stage"]["steps"] > 0
    assert Model(tmp_path / "model").decode(np.zeros((1, 16), np.float32)).shape == (1, 3, 64, 64)


def test_resume_continues_to_the_new_limit(sharpened, tmp_path):
    import shutil

    from training import checkpoint
    from training.sharpen import main

    run = tmp_path / "run"
    shutil.copytree(sharpened[0], run)
    result = main(["--out", str(run), "--resume", "--steps", "9"])
    assert result["training"]["steps"] == 9 and checkpoint.load(run / "checkpoint.pt")["step"] == 9
    assert json.loads((run / "config.json").read_text())["steps"] == 9, "a limit given on resume holds from then on"
    again = main(["--out", str(run), "--resume"])  # nothing given: the run's own limit (now 9) stands
    assert again["training"]["steps"] == 9
    with pytest.raises(SystemExit, match="holds no sharpen run"):
        main(["--out", str(tmp_path / "nothing"), "--resume"])
    with pytest.raises(SystemExit, match="already holds a run"):
        main(["--init", str(run), "--data", "x", "--out", str(run)])


def test_starting_from_an_exported_model_folder(tiny_model_dir, tiny_run, synthetic_dir, tmp_path):
    import shutil

    import torch

    from training import checkpoint, prior as training_prior
    from training.export import export
    from training.sharpen import load_init

    vae, prior, first = load_init(tiny_model_dir)
    with np.load(tiny_model_dir / "latent_prior.npz") as arrays:
        assert np.allclose(prior["mean"].numpy(), arrays["mean"])
    assert first["loss"]["beta"] > 0 and first["training"]["steps"] > 0
    # A model folder whose prior is a packed mixture (as the default's is): read as the service reads it.
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = checkpoint.load(run / "checkpoint.pt")
    codes = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    state["latent_prior"] = {**training_prior.fit_mixture(codes, 3), "data": "x", "filter": []}
    checkpoint.save_atomic(state, run / "checkpoint.pt")
    export(run, tmp_path / "mixture-model")
    _, mixture, _ = load_init(tmp_path / "mixture-model")
    assert mixture["scale_trils"].shape == (3, 16, 16)
    assert torch.allclose(mixture["means"], state["latent_prior"]["means"], atol=1e-6)
    assert training_prior.latents(mixture, torch.randn(4, 16)).shape == (4, 16)
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    assert vae.cfg.latent_dim == meta["latent_dim"]
    with pytest.raises(SystemExit, match="neither a run folder"):
        load_init(tmp_path)


def test_the_perceptual_distance_sees_blur_and_the_yardstick_trains_nothing(real_photos):
    """Lite1 features: zero for the same image, larger for a blurred copy than for a brighter one.
    And no training module loads EfficientNet-Lite0, the yardstick of benchmarks/perceptual.py."""
    import torch
    from PIL import Image, ImageFilter

    from training.perceptual_loss import PerceptualLoss

    def tensor(im):
        return torch.from_numpy(np.asarray(im.convert("RGB").resize((128, 128)), np.float32) / 255).permute(2, 0, 1)[None]

    photo = Image.open(real_photos[0])
    x = tensor(photo)
    blurred = tensor(photo.filter(ImageFilter.GaussianBlur(3)))
    loss = PerceptualLoss(size=128)
    assert float(loss(x, x)) < 1e-6
    assert float(loss(x, blurred)) > 2 * float(loss(x, (x * 0.9 + 0.05)))

    probe = ("import sys, training.sharpen, training.train; from training.perceptual_loss import PerceptualLoss; "
             "PerceptualLoss(size=64); print([m for m in sys.modules if 'lite0' in m])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_adaptive_weight_gives_the_adversarial_gradient_the_reconstruction_gradients_size():
    import torch

    from training.discriminator import adaptive_weight

    layer = torch.nn.Parameter(torch.randn(4, 3))
    x = torch.randn(5, 3)
    rec = (x @ layer.T).pow(2).mean()
    g = 100.0 * (x @ layer.T).sum()
    weight = adaptive_weight(rec, g, layer)
    rec_grad = torch.autograd.grad(rec, layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(weight * g, layer)[0]
    assert not weight.requires_grad and torch.isclose(g_grad.norm(), rec_grad.norm(), rtol=1e-3)
