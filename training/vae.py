"""The convolutional VAE (PyTorch). Used by training and export, never by the Lambda (model/ is what the Lambda ships).

Encoder: strided convolutions halve the image down to 4x4, each stage followed by
residual blocks; two separate linear heads give the mean and the log-variance of
q(z|x). Decoder: a linear layer back to 4x4, then nearest-neighbour upsampling +
convolution stages mirrored from the encoder (computed as one transposed convolution,
see UpsampleConv), and a sigmoid so outputs live in [0, 1] like the inputs (white is
reachable).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

IMAGE_SIZES = (64, 128, 256)
BOTTOM = 4  # spatial size the encoder reduces every image size to


@dataclass(frozen=True)
class VAEConfig:
    image_size: int = 128
    latent_dim: int = 256
    base_channels: int = 16  # width of the first stage; doubles each stage...
    max_channels: int = 128  # ...up to this width
    res_blocks: int = 1  # residual blocks per stage, in encoder and decoder
    encoder_width: int = 1  # the encoder's stages are this many times wider than the decoder's

    def __post_init__(self):
        if self.image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES}, not {self.image_size}")
        if self.latent_dim < 1 or self.base_channels < 1 or self.max_channels < self.base_channels:
            raise ValueError(f"bad VAE widths: {self}")
        if self.res_blocks < 0:
            raise ValueError("res_blocks must be >= 0")
        if self.encoder_width < 1:
            raise ValueError("encoder_width must be >= 1")

    @property
    def channels(self) -> list[int]:
        """Width of each stage, from the full-resolution end to the 4x4 end."""
        stages = int(math.log2(self.image_size // BOTTOM))
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(stages)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "VAEConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        # Start each block as the identity: deep stacks without normalisation train stably.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


# How a 3x3 convolution after nearest 2x upsampling lands on the low-resolution input, per
# axis. Output row 2i reads input rows i-1 (its top tap) and i (the other two); row 2i+1
# reads i (top two) and i+1 (bottom). A stride-2 transposed convolution with a 4-tap kernel
# reads exactly those rows: taps 3, 1 for row 2i and 2, 0 for row 2i+1. Rows: its 4 taps;
# columns: the 3x3 kernel's taps that sum into each.
_FOLD = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


class UpsampleConv(nn.Conv2d):
    """Nearest 2x upsampling, then a 3x3 convolution: computed as one stride-2 transposed
    convolution of the input whose 4x4 kernel is folded from the 3x3 one. Exactly the same
    function of the same weights (checkpoints are unchanged), but 4/9 of the multiply-adds
    and the 4x larger upsampled tensor is never written, read or kept for backward: the
    decoder's high-resolution end is where training time goes (benchmarks/train_speed.py)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding=1)
        # A buffer, so it moves with the module: copied from host memory in forward, it would
        # make each GPU step wait for the CPU. Not persistent: checkpoints stay as they were.
        self.register_buffer("fold", _FOLD.clone(), persistent=False)

    def folded_weight(self) -> torch.Tensor:
        """(out, in, 3, 3) -> the transposed convolution's (in, out, 4, 4)."""
        fold = self.fold.to(self.weight.dtype)
        return torch.einsum("ka,lb,oiab->iokl", fold, fold, self.weight)

    def forward(self, x):
        return F.conv_transpose2d(x, self.folded_weight(), self.bias, stride=2, padding=1)


class Encoder(nn.Module):
    """x in [0, 1], shape (N, 3, S, S) -> (mu, logvar), each (N, latent_dim)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for width in (w * cfg.encoder_width for w in cfg.channels):
            layers += [nn.Conv2d(prev, width, 4, stride=2, padding=1), nn.SiLU()]
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            prev = width
        self.features = nn.Sequential(*layers)
        flat = prev * BOTTOM * BOTTOM
        self.mu = nn.Linear(flat, cfg.latent_dim)
        self.logvar = nn.Linear(flat, cfg.latent_dim)

    def forward(self, x):
        h = F.silu(self.features(x * 2.0 - 1.0)).flatten(1)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """z, shape (N, latent_dim) -> image in [0, 1], shape (N, 3, S, S)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = cfg.channels[::-1]  # 4x4 end first
        self.bottom_channels = widths[0]
        self.project = nn.Linear(cfg.latent_dim, widths[0] * BOTTOM * BOTTOM)
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            out = widths[i + 1] if i + 1 < len(widths) else max(width // 2, 16)
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            # The Identity holds the place the separate nn.Upsample had, so the parameters keep
            # the names every checkpoint written before UpsampleConv uses.
            layers += [nn.Identity(), UpsampleConv(width, out), nn.SiLU()]
            width = out
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.features = nn.Sequential(*layers)

    def forward(self, z):
        h = F.silu(self.project(z)).view(-1, self.bottom_channels, BOTTOM, BOTTOM)
        # Channels-last like the encoder's input (train.py): a layer whose input and output
        # layouts differ makes the elementwise ops around it several times slower.
        h = h.contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(self.features(h))


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        self.cfg = cfg or VAEConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)
        self._init_weights()

    def _init_weights(self):
        # Without normalisation layers, PyTorch's default init shrinks the signal at every
        # layer and the decoder learns slowly; He init keeps activations at unit scale.
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.weight.abs().sum() > 0:  # skip zero-init blocks
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @staticmethod
    def reparameterize(mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std)

    def forward(self, x):
        """Training pass: returns (reconstruction from a sampled z, mu, logvar)."""
        mu, logvar = self.encoder(x)
        logvar = logvar.clamp(-30.0, 20.0)
        return self.decoder(self.reparameterize(mu, logvar)), mu, logvar

    @torch.no_grad()
    def reconstruct(self, x):
        """Deterministic reconstruction: decode the posterior mean."""
        mu, _ = self.encoder(x)
        return self.decoder(mu)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None):
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device) * temperature
        return self.decoder(z)
