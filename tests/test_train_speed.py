"""The speed benchmark's variants compute what the model computes: an A/B of speed between
them is a comparison of two ways to run the same network."""
import pytest

from tests.conftest import needs_torch

pytestmark = needs_torch
torch = pytest.importorskip("torch")

from benchmarks.train_speed import VARIANTS  # noqa: E402
from model.vae import VAE, VAEConfig  # noqa: E402


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "model"])
def test_each_variant_computes_the_models_function(variant):
    torch.manual_seed(0)
    cfg = VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=32)
    model, other = VAE(cfg).double(), VAE(cfg).double()
    other.load_state_dict(model.state_dict())
    VARIANTS[variant](other)
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    z = torch.randn(2, 16, dtype=torch.float64)
    assert torch.allclose(other.encoder(x)[0], model.encoder(x)[0], atol=1e-10)
    assert torch.allclose(other.decoder(z), model.decoder(z), atol=1e-10)
    # ...and really computes it another way: some layer no longer runs the model's own forward.
    replaced = [m for m in other.modules() if "forward" in vars(m)]
    assert replaced, f"{variant} changed nothing"
