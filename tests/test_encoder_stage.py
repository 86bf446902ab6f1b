"""The encoder-only fine-tuning experiment: the decoder must come out bit for bit unchanged."""
import pytest

from tests.conftest import needs_torch

pytestmark = needs_torch


@pytest.mark.parametrize("decode", ["sample", "mean"])
def test_only_the_encoder_moves(tmp_path, tiny_run, synthetic_dir, decode):
    import torch

    from experiments.encoder_stage import main
    from training import checkpoint

    start = checkpoint.load(tiny_run / "checkpoint.pt")["model"]
    main(["--decode", decode, "--", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"),
          "--init", str(tiny_run), "--epochs", "2", "--batch-size", "16", "--lr", "3e-3"])
    tuned = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    for name, weight in start.items():
        same = torch.equal(tuned["train_model"][name], weight)
        assert same == name.startswith("decoder."), name if name.startswith("decoder.") else f"{name} did not train"
    from training import train
    assert train.VAE is __import__("training.vae", fromlist=["VAE"]).VAE, "the trainer is left as it was"
