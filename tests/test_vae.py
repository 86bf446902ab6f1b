"""The VAE, its loss and its augmentation (PyTorch)."""
import math

import pytest

from tests.conftest import needs_torch

pytestmark = needs_torch
torch = pytest.importorskip("torch")

from training.vae import VAE, VAEConfig  # noqa: E402
from training.augment import augment, rotate_hue  # noqa: E402
from training.losses import LossConfig, beta_at, kl_per_dim, vae_loss  # noqa: E402
from training.metrics import psnr_per_image, ssim  # noqa: E402


@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes_and_ranges(size):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=size, latent_dim=24, base_channels=8, max_channels=32, res_blocks=1))
    x = torch.rand(2, 3, size, size)
    recon, mu, logvar = vae(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 24)
    assert recon.min() >= 0 and recon.max() <= 1
    assert vae.sample(3).shape == (3, 3, size, size)


def test_mean_and_log_variance_are_separate_heads():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=16))
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        mu, logvar = vae.encoder(x)
        assert not torch.allclose(mu, logvar)
        # Changing only the log-variance head must leave the mean alone.
        vae.encoder.logvar.bias.add_(1.0)
        mu2, logvar2 = vae.encoder(x)
    assert torch.equal(mu, mu2)
    assert torch.allclose(logvar2, logvar + 1.0)


def test_reconstruction_is_deterministic_and_training_pass_is_not():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=16))
    with torch.no_grad():
        vae.encoder.logvar.bias.fill_(0.0)  # unit variance: sampling visibly differs from the mean
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(vae.reconstruct(x), vae.reconstruct(x))
    assert not torch.allclose(vae(x)[0], vae(x)[0])


def test_sampling_with_temperature_zero_decodes_the_origin():
    vae = VAE(VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=16))
    a = vae.sample(2, temperature=0.0)
    origin = vae.decoder(torch.zeros(1, 16)).detach()
    assert torch.allclose(a, origin.expand_as(a))


def test_kl_matches_hand_computation():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # KL = 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) per dimension
    expected = [0.5 * (1 + 1 - 1 - 0), 0.5 * (0 + 4 - 1 - math.log(4.0))]
    assert kl_per_dim(mu, logvar)[0].tolist() == pytest.approx(expected)


def test_original_normalisation_is_mean_mse_plus_kl_over_batch_pixels():
    torch.manual_seed(0)
    x, recon = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5)
    loss, _ = vae_loss(x, recon, mu, logvar, LossConfig(kl_norm="original"))
    kl_total = sum(0.5 * (m**2 + math.exp(lv) - 1 - lv) for m, lv in zip(mu.flatten().tolist(), logvar.flatten().tolist()))
    mse = ((x - recon) ** 2).mean().item()
    assert loss.item() == pytest.approx(mse + kl_total / (4 * 3 * 8 * 8), rel=1e-5)


def test_image_normalisation_weights_per_image_kl_by_beta():
    torch.manual_seed(1)
    x, recon = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5)
    loss, parts = vae_loss(x, recon, mu, logvar, LossConfig(beta=0.5))
    per_image_kl = kl_per_dim(mu, logvar).sum(1).mean().item()
    assert parts["kl"].item() == pytest.approx(per_image_kl)
    assert loss.item() == pytest.approx(((x - recon) ** 2).mean().item() + 0.5 * per_image_kl / 192, rel=1e-5)


def test_kl_warmup_and_free_bits():
    cfg = LossConfig(beta=0.1, warmup=0.5)
    assert beta_at(cfg, 0.0) == 0.0 and beta_at(cfg, 0.25) == pytest.approx(0.05) and beta_at(cfg, 0.9) == 0.1
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)  # KL exactly 0 per dimension
    x = torch.rand(2, 3, 8, 8)
    loss, _ = vae_loss(x, x, mu, logvar, LossConfig(beta=1.0, free_bits=0.25))
    assert loss.item() == pytest.approx(3 * 0.25 / 192)  # the floor, not 0


def test_hue_rotation_keeps_white_grey_and_luminance_and_changes_red():
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = 1.0  # white
    x[0, :, 0, 1] = 0.5  # grey
    x[0, :, 1, 0] = torch.tensor([0.6, 0.3, 0.3])  # red (in gamut after turning)
    turned = rotate_hue(x.clone(), torch.tensor([2.0]))
    assert torch.allclose(turned[0, :, 0, 0], torch.ones(3), atol=1e-5)
    assert torch.allclose(turned[0, :, 0, 1], torch.full((3,), 0.5), atol=1e-5)
    red_after = turned[0, :, 1, 0]
    assert red_after[0] < red_after[1:].max()  # no longer red
    luma = torch.tensor([0.299, 0.587, 0.114])
    assert (luma @ red_after).item() == pytest.approx((luma @ x[0, :, 1, 0]).item(), abs=1e-4)
    assert torch.allclose(rotate_hue(x.clone(), torch.tensor([0.0])), x, atol=1e-5)


def test_augment_flips_and_stays_in_range():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment(x.clone(), flip=True, hue_prob=0.0)
    flipped = [(o == i.flip(-1)).all().item() for o, i in zip(out, x)]
    kept = [(o == i).all().item() for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    coloured = augment(x.clone(), flip=False, hue_prob=1.0)
    assert coloured.min() >= 0 and coloured.max() <= 1 and not torch.allclose(coloured, x)


def test_zoom_and_shift_move_the_picture_and_fill_with_white():
    from training.augment import zoom_and_shift

    x = torch.ones(1, 3, 32, 32)
    x[0, :, 12:20, 12:20] = 0.0  # a black 8x8 square in the middle of a white picture

    def box(img):  # rows and columns that are mostly dark
        dark = img[0].mean(0) < 0.5
        rows, cols = dark.any(1).nonzero().flatten(), dark.any(0).nonzero().flatten()
        return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()

    same = zoom_and_shift(x, torch.tensor([1.0]), torch.zeros(1, 2))
    assert torch.allclose(same, x, atol=1e-6)
    # A quarter of the width to the right and an eighth down: 8 and 4 pixels.
    moved = zoom_and_shift(x, torch.tensor([1.0]), torch.tensor([[0.25, 0.125]]))
    assert box(moved) == (16, 23, 20, 27)
    assert torch.allclose(moved[0, :, :, :8], torch.ones(3, 32, 8), atol=1e-6)  # white came in from the left
    # Twice the size, about the centre: the square becomes 16x16.
    top, bottom, left, right = box(zoom_and_shift(x, torch.tensor([2.0]), torch.zeros(1, 2)))
    assert (bottom - top + 1, right - left + 1) == (16, 16)
    # Zoomed out, the picture's edges show white, never black.
    small = zoom_and_shift(torch.rand(2, 3, 16, 16), torch.tensor([0.5, 0.5]), torch.zeros(2, 2))
    assert torch.allclose(small[:, :, 0], torch.ones(2, 3, 16), atol=1e-6)


def test_augment_with_zoom_and_shift_varies_per_image_and_stays_in_range():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).clone()
    out = augment(x, flip=False, hue_prob=0.0, zoom=0.2, shift=0.1)
    assert out.min() >= 0 and out.max() <= 1
    assert len({tuple(o.flatten()[:64].tolist()) for o in out}) == 8  # each image framed differently
    assert torch.equal(augment(x, flip=False, hue_prob=0.0), x)  # off by default


def test_metrics():
    a = torch.rand(3, 3, 32, 32)
    assert torch.allclose(ssim(a, a), torch.ones(3), atol=1e-5)
    noisy = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    assert (ssim(a, noisy) < 0.95).all()
    assert psnr_per_image(a, a).min() >= 99
    half = torch.full((1, 3, 4, 4), 0.5)
    assert psnr_per_image(half, torch.zeros_like(half)).item() == pytest.approx(10 * math.log10(1 / 0.25))


@pytest.mark.parametrize("height, width", [(4, 4), (5, 3)])
def test_upsampling_convolution_is_nearest_upsampling_then_the_3x3_convolution(height, width):
    from torch.nn import functional as F

    from training.vae import UpsampleConv

    torch.manual_seed(0)
    up = UpsampleConv(5, 7).double()
    x = torch.randn(2, 5, height, width, dtype=torch.float64, requires_grad=True)
    got = up(x)
    expected = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), up.weight, up.bias, padding=1)
    assert got.shape == (2, 7, 2 * height, 2 * width)
    assert torch.allclose(got, expected, atol=1e-12)
    # The same function of the same weights: training follows the same gradients.
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, (x, up.weight, up.bias), g)
    reference = torch.autograd.grad(expected, (x, up.weight, up.bias), g)
    for a, b in zip(grads, reference):
        assert torch.allclose(a, b, atol=1e-12)


def test_the_decoder_uses_no_host_tensor_when_it_runs_on_another_device():
    """On a GPU, a constant copied from host memory in forward would make every training step
    wait for the CPU (tests/test_cuda.py checks that on a GPU). Here: the decoder on the meta
    device must not touch a CPU tensor."""
    from torch.utils._pytree import tree_leaves
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostTensors(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tree_leaves((args, kwargs))):
                self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    vae = VAE(VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=16)).to("meta")
    z = torch.randn(2, 16, device="meta")
    with HostTensors() as host:
        assert vae.decoder(z).shape == (2, 3, 64, 64)
    assert host.ops == []
