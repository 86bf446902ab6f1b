"""Fine-tune only the encoder of a run against its frozen decoder: the experiments behind the
experiments/README.md's "The encoder is the bottleneck".

    python -m experiments.encoder_stage --decode sample -- --data ../shared/data/manifest.csv \\
        --val-filter white_background=1 --init runs/sigma128 --out runs/enc-ft --beta 0.02 --kl-warmup 0 \\
        --lr 3e-4 --batch-size 32 --max-time 1200 --epochs 1000

Everything after `--` goes to `python -m training.train` (so a run from `python -m training.widen`
can be the --init). `--decode sample` keeps the usual loss (the decoder sees sampled codes);
`--decode mean` decodes the posterior mean, as reconstruction does, so the encoder is trained
on exactly what validation measures (the KL term then no longer holds the variance up).
"""
from __future__ import annotations

import argparse

from training.vae import VAE
from training import train


def frozen_decoder_vae(decode: str) -> type[VAE]:
    class FrozenDecoderVAE(VAE):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.decoder.requires_grad_(False)  # no gradients: the optimiser leaves it as it is

        def forward(self, x):
            if decode == "sample":
                return super().forward(x)
            mu, logvar = self.encoder(x)
            return self.decoder(mu), mu, logvar.clamp(-30.0, 20.0)

    return FrozenDecoderVAE


def main(argv: list[str] | None = None, stop_on_ctrl_c: bool = False) -> dict | None:
    p = argparse.ArgumentParser(prog="python -m experiments.encoder_stage", description=__doc__.split("\n\n")[0])
    p.add_argument("--decode", choices=("sample", "mean"), default="sample")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then python -m training.train's flags")
    args = p.parse_args(argv)
    rest = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    train.VAE = frozen_decoder_vae(args.decode)  # the trainer builds its model through this name
    try:
        return train.main(rest, stop_on_ctrl_c=stop_on_ctrl_c)
    finally:
        train.VAE = VAE


if __name__ == "__main__":
    main(stop_on_ctrl_c=True)
