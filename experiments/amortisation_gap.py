"""How far the encoder's codes are from the best codes the decoder can take (the amortisation gap).

For the catalogue set's validation photos and as many of its training photos, the code z of
each photo is optimised through the frozen decoder (Adam from the encoder's mean) on the
training objective for a point code: squared error + beta * |z|^2 / 2. If optimised codes
reconstruct much better than the encoder's, the decoder can draw those photos and it is the
encoder that falls short; a gap larger on held-out than on training photos means the encoder
generalises worse than the decoder.

    python -m experiments.amortisation_gap runs/sigma128 --name amortisation_gap_128px

Writes experiments/results/<name>.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from experiments.common import MANIFEST, save
from training.data import load_dataset
from training.export import load_vae
from training.metrics import psnr_per_image


def optimise_codes(decoder, photos: torch.Tensor, start: torch.Tensor, beta: float, steps: int, lr: float,
                   report_at: tuple[int, ...]) -> dict[int, dict]:
    z = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    trace = {}
    for step in range(steps + 1):
        recon = decoder(z)
        if step in report_at:
            trace[step] = {"psnr": psnr_per_image(recon.detach(), photos).mean().item(),
                           "half_sq_norm": 0.5 * z.detach().pow(2).sum(1).mean().item()}
        if step == steps:
            break
        loss = (recon - photos).pow(2).sum((1, 2, 3)).mean() + beta * 0.5 * z.pow(2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return trace


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.amortisation_gap", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (checkpoint.pt)")
    p.add_argument("--name", required=True, help="name of the result JSON")
    p.add_argument("--data", default=str(MANIFEST))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.02)
    args = p.parse_args(argv)

    results = {}
    for run in map(Path, args.runs):
        vae, state = load_vae(run)
        vae.eval().requires_grad_(False)
        beta = state["loss_config"]["beta"]
        data = load_dataset(args.data, vae.cfg.image_size, {"white_background": "1"})
        results[run.name] = {"beta": beta, "architecture": vae.cfg.to_dict()}
        for split, images in (("validation", data.val), ("training", data.train[: len(data.val)])):
            photos = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
            with torch.no_grad():
                mu = vae.encoder(photos)[0]
            trace = optimise_codes(vae.decoder, photos, mu, beta, args.steps, args.lr,
                                   report_at=(0, args.steps // 4, args.steps // 2, args.steps))
            gap = trace[args.steps]["psnr"] - trace[0]["psnr"]
            results[run.name][split] = {"photos": len(photos), "encoder_psnr": trace[0]["psnr"],
                                        "optimised_psnr": trace[args.steps]["psnr"], "gap_db": gap,
                                        "trace": {str(k): v for k, v in trace.items()}}
            print(f"{run.name:16s} {split:10s} ({len(photos)} photos): encoder {trace[0]['psnr']:.2f} dB, "
                  f"optimised codes {trace[args.steps]['psnr']:.2f} dB after {args.steps} steps (gap {gap:.2f} dB)")
    print(f"-> {save(args.name, {'steps': args.steps, 'lr': args.lr, 'runs': results})}")


if __name__ == "__main__":
    main()
