"""One optimisation step: the forward pass that --compile compiles, then backward and the update.

Kept apart from the loop (training/train.py) because benchmarks/train_speed.py times exactly
these two functions, and tests compare them compiled and eager.
"""
from __future__ import annotations

import torch

from training.augment import augment
from training.devices import to_float
from training.losses import LossConfig, beta_at, loss_terms


def forward_loss(model, batch_uint8, device, s, loss_cfg: LossConfig, autocast):
    """A uint8 batch, augmented on the device, through the model (in bf16 where autocast is on) ->
    (reconstruction term, KL term, parts), parts holding the reconstruction error and the KL as
    tensors; the loss is recon_term + beta * kl_term (train_step). `s` is the run's Settings (its
    flip, hue_prob, zoom and shift). --compile compiles this whole function, so the augmentation's
    and the loss's elementwise work fuses into few kernels as the model's does."""
    x = augment(to_float(batch_uint8, device), s.flip, s.hue_prob, zoom=s.zoom, shift=s.shift)
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast:
        recon, mu, logvar = model(x)
    return loss_terms(x, recon, mu, logvar, loss_cfg)


def train_step(model, optimizer, batch_uint8, device, s, loss_cfg: LossConfig, progress: float, autocast,
               loss_fn=forward_loss):
    """One optimisation step on a uint8 batch: loss_fn (forward_loss, or it compiled), backward, update."""
    recon_term, kl_term, parts = loss_fn(model, batch_uint8, device, s, loss_cfg, autocast)
    # The KL weight is applied here, outside what --compile compiles: a Python float that changes
    # every step of the warm-up would cost a second compile (dynamo first specialises on its value).
    loss = recon_term + beta_at(loss_cfg, progress) * kl_term
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.detach(), parts
