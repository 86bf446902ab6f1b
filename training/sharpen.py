"""Stage 2: teach a trained VAE's decoder to draw details (encoder frozen).

    python -m training.sharpen --init model/default --data PHOTOS --out runs/NAME-sharp --max-time 5400
    python -m training.sharpen --out runs/NAME-sharp --resume           # continue
    python -m training.export runs/NAME-sharp --out runs/NAME-sharp-model

Squared error rewards blur: where a grille or a wheel could be drawn several ways, their average
costs least. This stage keeps the encoder (so the codes, and the sampling distribution fitted to
them, stay valid) and retrains the decoder, from its weights, on decoded posterior samples with
  L1 + perceptual distance (EfficientNet-Lite1 features, training/perceptual_loss.py)
  + adaptive weight x PatchGAN hinge loss (training/discriminator.py),
the recipe of the latent-diffusion autoencoder (Rombach et al. 2022) applied to a VAE whose
reconstruction has already converged. Decoding samples z ~ q(z|x), not the mean, keeps the decoder
smooth between photos, where the sampler and the morphs land.

--init takes a run folder (checkpoint.pt) or an exported model folder (model.json + TorchScript).
The run folder this writes is a training run as training.export reads it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from training import checkpoint, config, devices, report
from training.augment import augment
from training.data import DatasetError, load_dataset, warnings_printed
from training.discriminator import PatchDiscriminator, adaptive_weight, generator_loss, hinge_d_loss
from training.ema import EMA
from training.metrics import reconstruction_metrics
from training.perceptual_loss import PerceptualLoss
from training.schedule import Schedule, StopRequest
from training.vae import VAE, VAEConfig
from model import prior as runtime_prior
from model.runtime import PRIOR_FILE


# Settings a resume may change (given again, they hold from then on), and their defaults.
LIMITS = {"steps": 20_000, "max_time": 0.0, "eval_every": 500}
RESUMABLE = ("steps", "max_time", "eval_every", "device")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.sharpen", description=__doc__.split("\n\n")[0])
    p.add_argument("--init", help="run folder or exported model folder whose weights to start from")
    p.add_argument("--data", help="folder, .zip or manifest .csv of photos")
    p.add_argument("--filter", action="append", default=[], metavar="COLUMN=VALUE")
    p.add_argument("--val-filter", action="append", default=[], metavar="COLUMN=VALUE")
    p.add_argument("--out", required=True, help="run folder (created)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--steps", type=int, help=f"optimisation steps (default {LIMITS['steps']:,}; or --max-time, "
                   "whichever first)")
    p.add_argument("--max-time", type=float, help="seconds of training; 0 (default): no limit")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="decoder and discriminator (Adam, betas 0.5, 0.9)")
    p.add_argument("--l1-weight", type=float, default=1.0)
    p.add_argument("--perceptual-weight", type=float, default=0.1)
    p.add_argument("--perceptual-size", type=int, default=128, help="images are resized to this for Lite1")
    p.add_argument("--adversarial-weight", type=float, default=0.5, help="times the adaptive weight; 0: off")
    p.add_argument("--disc-start", type=int, default=300, help="steps the discriminator learns alone first")
    p.add_argument("--disc-channels", type=int, default=32)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"))
    p.add_argument("--eval-every", type=int, help=f"steps between validation, grids and checkpoints (default "
                   f"{LIMITS['eval_every']})")
    return p


def load_init(path: Path) -> tuple[VAE, dict, dict]:
    """(VAE, latent_prior, the first stage's record {"loss", "training"}) from a run folder or an
    exported model folder."""
    if (path / "checkpoint.pt").exists():
        try:
            vae, state = checkpoint.load_vae(path)
        except checkpoint.CheckpointError as exc:
            raise SystemExit(f"error: --init: {exc}") from None
        if not state.get("latent_prior"):
            raise SystemExit(f"error: --init {path}: its checkpoint has no sampling distribution (fit one: "
                             f"python -m training.prior {path})")
        metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
        return vae, state["latent_prior"], {"loss": state.get("loss_config", {}), "training": metrics.get("training", {})}
    if not (path / "model.json").exists():
        raise SystemExit(f"error: --init {path}: neither a run folder (checkpoint.pt) nor a model folder (model.json)")
    meta = json.loads((path / "model.json").read_text())
    vae = VAE(VAEConfig.from_dict(meta["architecture"]))
    for part, module in (("encoder", vae.encoder), ("decoder", vae.decoder)):
        traced = torch.jit.load(str(path / f"{part}.pt"), map_location="cpu").state_dict()
        # A traced module keeps its non-persistent buffers too (UpsampleConv's fold): not weights.
        module.load_state_dict({k: v for k, v in traced.items() if k in module.state_dict()})
    try:  # the service's own reader: it unpacks and checks whichever format the file is in
        served = runtime_prior.load(path / PRIOR_FILE, vae.cfg.latent_dim)
    except runtime_prior.PriorError as exc:
        raise SystemExit(f"error: --init {path}: {exc}") from None
    if served.components == 1:
        prior = {"mean": torch.from_numpy(served.means[0]).float(), "scale_tril": torch.from_numpy(served.scale_trils[0]).float()}
    else:
        prior = {"weights": torch.from_numpy(served.weights).float(), "means": torch.from_numpy(served.means).float(),
                 "scale_trils": torch.from_numpy(served.scale_trils).float()}
    fitted = meta.get("latent", {}).get("prior_fitted_on", {})
    prior.update({"codes": fitted.get("codes", 0), "data": fitted.get("data"), "filter": fitted.get("filter", [])})
    return vae, prior, {"loss": meta.get("loss", {}), "training": meta.get("training", {})}


def main(argv: list[str] | None = None, stop_on_ctrl_c: bool = False) -> dict:
    """stop_on_ctrl_c: the command line's Ctrl-C stops after the current step and finishes the run
    (evaluation, checkpoint, metrics.json), as training.train does; a second one quits at once."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    if args.resume:
        if not ckpt_path.exists():
            raise SystemExit(f"error: --resume: {out} holds no sharpen run (no checkpoint.pt)")
        saved = json.loads((out / "config.json").read_text())
        # Only what was given now changes, and holds for later resumes; the run's own settings stand otherwise.
        saved.update({k: v for k, v in vars(args).items() if k in RESUMABLE and v is not None})
        checkpoint.write_text_atomic(out / "config.json", json.dumps(saved, indent=2))
        args = argparse.Namespace(**{**saved, "resume": True})
    elif ckpt_path.exists():
        raise SystemExit(f"error: {out} already holds a run: pass --resume, or choose another --out")
    elif not (args.init and args.data):
        raise SystemExit("error: --init and --data are required (unless --resume)")
    else:
        args = argparse.Namespace(**{**vars(args), **{k: v for k, v in LIMITS.items() if getattr(args, k) is None}})
    torch.manual_seed(args.seed)

    device = devices.setup_device(getattr(args, "device", None) or "auto").device
    precision = devices.resolve_precision(device, "auto")
    # A resumed run's encoder, prior and record are its own (its --init may have changed since).
    vae, prior, first_stage = load_init(Path(args.init)) if not args.resume else own_init(ckpt_path, args)
    vae.to(device).encoder.requires_grad_(False).eval()
    decoder = vae.decoder
    disc = PatchDiscriminator(args.disc_channels).to(device)
    perceptual = PerceptualLoss(size=args.perceptual_size).to(device)
    opt_g = torch.optim.Adam(decoder.parameters(), lr=args.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.9))
    ema = EMA(decoder, args.ema)
    step, elapsed, history = 0, 0.0, []
    if args.resume:
        state = checkpoint.load(ckpt_path)  # on the CPU: the random states must stay there; weights copy over
        decoder.load_state_dict(state["train_decoder"])
        ema.module.load_state_dict(state["ema_decoder"])
        disc.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        devices.restore_rng(state, device, 0, 1, args.seed)  # the CPU's and the GPU's
    else:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text_atomic(out / "config.json", json.dumps(vars(args), indent=2))
    (out / "samples").mkdir(exist_ok=True)

    try:
        with warnings_printed():
            data = load_dataset(args.data, vae.cfg.image_size, config.parse_filters(args.filter), 0.1,
                                config.parse_filters(args.val_filter))
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}") from None
    train = torch.from_numpy(data.train).permute(0, 3, 1, 2).contiguous()
    val = torch.from_numpy(data.val).permute(0, 3, 1, 2).contiguous()
    limit = f" or {args.max_time:,.0f} s, whichever comes first" if args.max_time else ""
    print(f"{len(train)} training / {len(val)} validation photos; decoder from {args.init}; until step "
          f"{args.steps:,}{limit}", file=sys.stderr)

    parts = Parts(vae.encoder, decoder, disc, perceptual, opt_g, opt_d, ema,
                  lambda: devices.autocast_for(device, precision))
    # The bar moves toward whichever limit ends the run, --steps or --max-time, and says the time left.
    bar = report.ProgressBar(Schedule(args.steps, args.max_time or None), step, elapsed, enabled=True)
    epochs = math.ceil(args.steps * args.batch_size / len(train))
    start_elapsed, session_start = elapsed, time.perf_counter()
    sums = np.zeros(4)
    fixed_u = torch.randn(8, vae.cfg.latent_dim, generator=torch.Generator().manual_seed(args.seed))  # every frame's draws
    with StopRequest(enabled=stop_on_ctrl_c) as interrupt:
        while step < args.steps and not (args.max_time and elapsed >= args.max_time) and not interrupt.requested:
            idx = torch.randint(len(train), (args.batch_size,))
            losses = train_step(parts, augment(devices.to_float(train[idx], device)), step, args)
            if not all(math.isfinite(v) for v in losses):
                bar.close()
                raise SystemExit(f"error: training diverged at step {step} (a loss is not finite); {ckpt_path} keeps "
                                 "the last checkpoint. Try a lower --lr or --adversarial-weight")
            sums += losses
            step += 1
            elapsed = start_elapsed + time.perf_counter() - session_start
            bar.update(step, elapsed)
            if step % 10 == 0:
                means = dict(zip(("rec", "g", "weight", "d"), (sums / 10).tolist()))
                history.append({"step": step, "elapsed": round(elapsed, 1), **means})
                bar.show(step * args.batch_size // len(train) + 1, epochs, "rec {rec:.4f} g {g:.3f} w {weight:.3g} "
                         "d {d:.3f}".format(**means), step, elapsed)
                sums[:] = 0
            if step % args.eval_every == 0:
                metrics = reconstruction_metrics(vae.encoder, ema.module, val, device)
                bar.write(f"step {step}: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}")
                history.append({"step": step, "elapsed": round(elapsed, 1), **{f"val_{k}": v for k, v in metrics.items()}})
                report.sample_grid(vae.encoder, ema.module, val, fixed_u, prior, device, frame(out, step))
                save(out, parts, vae, prior, first_stage, args, step, elapsed, history)
    bar.close()

    last = history[-1] if history else {}
    if last.get("step") == step and "val_psnr" in last:  # it ended on an evaluation step, saved with it
        metrics = {k.removeprefix("val_"): v for k, v in last.items() if k.startswith("val_")}
    else:
        metrics = reconstruction_metrics(vae.encoder, ema.module, val, device)
        save(out, parts, vae, prior, first_stage, args, step, elapsed, history)
        report.sample_grid(vae.encoder, ema.module, val, fixed_u, prior, device, frame(out, step))
    rate = step * args.batch_size / max(elapsed, 1e-9)  # the whole run's, over every session
    result = {
        "validation": {**metrics, "images": len(val)},
        "training": {"stage": "sharpen", "images": len(train), "steps": step, "seconds": round(elapsed, 1),
                     "images_per_second": round(rate, 1), "device": device.type, "precision": precision,
                     "data": str(args.data), "filter": args.filter, "val_filter": args.val_filter, "ema": args.ema,
                     "init": args.init, "first_stage": first_stage["training"]},
        "loss": loss_config(args, first_stage),
    }
    checkpoint.write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
    print(f"validation: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} -> {out / 'metrics.json'}",
          file=sys.stderr)
    return result


def frame(out: Path, step: int) -> Path:
    return out / "samples" / f"step_{step:06d}.png"


@dataclass
class Parts:
    """What one step uses and updates: the frozen encoder, the decoder (and its average), the
    discriminator, the perceptual distance, the optimisers, and the autocast context to run in."""

    encoder: torch.nn.Module
    decoder: torch.nn.Module
    disc: PatchDiscriminator
    perceptual: PerceptualLoss
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA
    autocast: Callable


def train_step(p: Parts, x: torch.Tensor, step: int, args) -> list[float]:
    """One decoder step, then one discriminator step -> [reconstruction loss, G loss, its weight, D loss]."""
    with torch.no_grad():
        mu, logvar = p.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    with p.autocast():
        recon = p.decoder(z)
        rec = (args.l1_weight * (recon.float() - x).abs().mean()
               + args.perceptual_weight * p.perceptual(recon, x).mean())
        g, weight, loss = torch.zeros(()), torch.zeros(()), rec
        if step >= args.disc_start and args.adversarial_weight > 0:
            g = generator_loss(p.disc(recon))
            weight = args.adversarial_weight * adaptive_weight(rec, g, p.decoder.features[-1].weight)
            loss = rec + weight * g
    p.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(p.decoder.parameters(), 1.0)
    p.opt_g.step()
    p.ema.update(p.decoder, step)

    with p.autocast():
        d_loss = hinge_d_loss(p.disc(x), p.disc(recon.detach()))
    p.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    p.opt_d.step()
    return [rec.item(), g.item(), float(weight), d_loss.item()]


def loss_config(args, first_stage: dict) -> dict:
    """The first stage's loss (which trained the encoder), and this stage's for the decoder."""
    return {**first_stage["loss"], "sharpen": {
        "l1_weight": args.l1_weight, "perceptual": "efficientnet-lite1", "perceptual_weight": args.perceptual_weight,
        "perceptual_size": args.perceptual_size, "adversarial": "patchgan hinge, adaptive weight",
        "adversarial_weight": args.adversarial_weight, "disc_start": args.disc_start}}


def own_init(ckpt_path: Path, args) -> tuple[VAE, dict, dict]:
    """What load_init gives, from a sharpen run's own checkpoint (its encoder, prior and record)."""
    vae, state = checkpoint.load_vae(ckpt_path.parent)
    first_stage = state.get("first_stage") or load_init(Path(args.init))[2]  # runs from before it was kept
    return vae, state["latent_prior"], first_stage


def save(out: Path, p: Parts, vae: VAE, prior: dict, first_stage: dict, args, step: int, elapsed: float,
         history: list) -> None:
    """A checkpoint training.export reads (model: the encoder with the averaged decoder), plus
    what --resume needs."""
    served = {**{f"encoder.{k}": v for k, v in vae.encoder.state_dict().items()},
              **{f"decoder.{k}": v for k, v in p.ema.module.state_dict().items()}}
    checkpoint.save_atomic({
        "model": served, "vae_config": vae.cfg.to_dict(), "latent_prior": prior, "first_stage": first_stage,
        "loss_config": loss_config(args, first_stage),
        "epoch": 0, "step": step, "elapsed": elapsed, "history": history, "rng": torch.get_rng_state(),
        "rng_ranks": devices.rng_states(next(p.decoder.parameters()).device, 1),
        "train_decoder": p.decoder.state_dict(), "ema_decoder": p.ema.module.state_dict(),
        "discriminator": p.disc.state_dict(), "opt_g": p.opt_g.state_dict(), "opt_d": p.opt_d.state_dict(),
    }, out / "checkpoint.pt")


if __name__ == "__main__":
    try:
        main(stop_on_ctrl_c=True)
    except KeyboardInterrupt:
        print("\ninterrupted: --resume continues from the last checkpoint", file=sys.stderr)
        sys.exit(130)
