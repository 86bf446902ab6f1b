"""Widen a trained run's encoder without changing what it computes, to fine-tune the wider one.

    python -m training.widen runs/A --encoder-width 2 --out runs/A-wide
    python -m training.train --data ... --init runs/A-wide --out runs/B

Why the encoder: on held-out photos, optimising the code z of each photo through the frozen
decoder gains 1.8 to 2.4 dB over the encoder's code (experiments/README.md, "The encoder is the bottleneck"), so
the decoder can draw them; the encoder cannot find the codes.

Every old weight is kept. A new channel's incoming weights are fresh (He init), its weights
into the old channels are zero, so until training starts to use the new channels the wider
network's outputs are exactly the old one's (Net2Net's function-preserving growth).
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from training.vae import VAE, VAEConfig
from training import checkpoint


def widen_encoder(state: dict, width: int) -> dict:
    """A checkpoint state (as train.py writes) -> one whose encoder is `width` times the decoder's width."""
    old_cfg = VAEConfig.from_dict(state["vae_config"])
    if width < old_cfg.encoder_width:
        raise ValueError(f"--encoder-width {width} is narrower than the run's ({old_cfg.encoder_width})")
    cfg = replace(old_cfg, encoder_width=width)
    wide = VAE(cfg).state_dict()
    for name, old in state["model"].items():
        new = wide[name]
        if new.dim() >= 2:
            out, inp = old.shape[:2]
            new[:out, inp:] = 0  # new inputs must not reach old outputs
        new[tuple(slice(0, n) for n in old.shape)] = old
    kept = {k: state[k] for k in ("loss_config", "latent_prior") if k in state}
    return {**kept, "model": wide, "vae_config": cfg.to_dict(), "epoch": 0, "step": 0, "elapsed": 0.0,
            "history": [], "widened_from": old_cfg.to_dict()}


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m training.widen", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run folder (or checkpoint.pt) to widen")
    p.add_argument("--encoder-width", type=int, required=True, help="new encoder width multiplier (2: twice the decoder's)")
    p.add_argument("--out", type=Path, required=True, help="folder for the widened checkpoint.pt (for train --init)")
    args = p.parse_args(argv)
    source = checkpoint.checkpoint_path(args.run)
    try:
        state = checkpoint.load(source)
        wide = widen_encoder(state, args.encoder_width)
    except (checkpoint.CheckpointError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if (args.out / "checkpoint.pt").exists():
        raise SystemExit(f"error: {args.out / 'checkpoint.pt'} exists; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint.save_atomic(wide, args.out / "checkpoint.pt")
    before = sum(t.numel() for t in state["model"].values())
    after = sum(t.numel() for t in wide["model"].values())
    print(f"{source}: encoder x{args.encoder_width}, {before / 1e6:.2f}M -> {after / 1e6:.2f}M parameters "
          f"-> {args.out / 'checkpoint.pt'}")
    return args.out


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
