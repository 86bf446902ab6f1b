"""Widening a trained encoder: the wider network computes exactly what the old one did."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs_torch

pytestmark = needs_torch


def random_state(res_blocks: int = 1) -> dict:
    import torch

    from training.vae import VAE, VAEConfig

    torch.manual_seed(0)
    cfg = VAEConfig(64, 16, 8, 32, res_blocks)
    vae = VAE(cfg)
    with torch.no_grad():  # every weight non-zero, the residual blocks' zero-initialised ones too
        for p in vae.parameters():
            p.normal_(0.0, 0.2)
    return {"model": vae.state_dict(), "vae_config": cfg.to_dict(), "loss_config": {"beta": 0.1}}


@pytest.mark.parametrize("width", [2, 3])
def test_the_wider_encoder_gives_the_same_codes_and_the_decoder_is_untouched(width):
    import torch

    from training.vae import VAE, VAEConfig
    from training.widen import widen_encoder

    state = random_state()
    wide = widen_encoder(state, width)
    old = VAE(VAEConfig.from_dict(state["vae_config"])).eval()
    old.load_state_dict(state["model"])
    new = VAE(VAEConfig.from_dict(wide["vae_config"])).eval()
    new.load_state_dict(wide["model"])
    assert new.cfg.encoder_width == width and wide["loss_config"] == state["loss_config"]
    assert [m.out_channels for m in new.encoder.features if isinstance(m, torch.nn.Conv2d)][0] == 8 * width
    assert sum(p.numel() for p in new.encoder.parameters()) > 2 * sum(p.numel() for p in old.encoder.parameters())
    x = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(old.encoder(x), new.encoder(x)):
            assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    for name, weight in state["model"].items():
        if name.startswith("decoder."):
            assert torch.equal(wide["model"][name], weight), name
    # The new channels are live (random incoming weights), so training can put them to use.
    first = wide["model"]["encoder.features.0.weight"]
    assert first[8:].abs().sum() > 0


def test_fine_tuning_and_export_take_the_widened_run(tmp_path, tiny_run, synthetic_dir):
    import numpy as np
    import onnxruntime as ort

    from training.export import export
    from training.train import main
    from training.widen import main as widen

    widen([str(tiny_run), "--encoder-width", "2", "--out", str(tmp_path / "wide")])
    result = main(["--data", str(synthetic_dir), "--out", str(tmp_path / "tuned"), "--init", str(tmp_path / "wide"),
                   "--epochs", "1", "--batch-size", "16", "--sample-every", "1"])
    assert result["model"]["encoder_width"] == 2
    meta = export(tmp_path / "tuned", tmp_path / "model")
    assert meta["architecture"]["encoder_width"] == 2
    session = ort.InferenceSession(str(tmp_path / "model" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    mu, logvar = session.run(None, {session.get_inputs()[0].name: np.random.rand(2, 3, 64, 64).astype(np.float32)})
    assert mu.shape == logvar.shape == (2, 16)


def test_the_cli_names_what_is_wrong(tmp_path, tiny_run):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "training.widen", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    missing = cli(str(tmp_path / "nowhere"), "--encoder-width", "2", "--out", str(tmp_path / "w"))
    assert missing.returncode != 0 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    ok = cli(str(tiny_run), "--encoder-width", "2", "--out", str(tmp_path / "w"))
    assert ok.returncode == 0, ok.stderr
    again = cli(str(tmp_path / "w"), "--encoder-width", "1", "--out", str(tmp_path / "w1"))
    assert again.returncode != 0 and "narrower" in again.stderr
    exists = cli(str(tiny_run), "--encoder-width", "2", "--out", str(tmp_path / "w"))
    assert exists.returncode != 0 and "exists" in exists.stderr
