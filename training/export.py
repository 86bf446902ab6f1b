"""Export a trained run as the model directory the service loads.

    python -m training.export runs/NAME --out model/default

Writes encoder/decoder jit-traced for CPU (encoder.pt, decoder.pt), the same two as
ONNX (encoder.onnx, decoder.onnx), the distribution to sample codes from
(latent_prior.npz: the Gaussian fitted to the training photos' codes, see
training/prior.py; a checkpoint without one, from a run stopped before its end, is refused) and model.json, which describes
them: format version, image and latent size, value ranges, file hashes, training
summary, metrics.
The export checks that TorchScript and ONNX agree with the eager model before it
replaces anything in --out.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from model.runtime import BACKEND_FILES, FORMAT_VERSION
from training.vae import VAE
from training import checkpoint, prior

PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    pass


WEIGHTS = ("final", "best")


def load_vae(run: Path, weights: str = "final") -> tuple[VAE, dict]:
    """The run's VAE and checkpoint (checkpoint.load_vae), its problems as ExportError."""
    try:
        return checkpoint.load_vae(run, weights)
    except checkpoint.CheckpointError as exc:
        raise ExportError(str(exc)) from None


# Output row 2i+a of UpsampleConv's stride-2 transposed convolution (4 taps, padding 1) reads input row i+d
# through tap _TAPS[a, d]; likewise for columns.
_TAPS = {(0, -1): 3, (0, 0): 1, (1, 0): 2, (1, 1): 0}


class _SubPixelTail(torch.nn.Module):
    """The decoder as ONNX Runtime runs it fastest: the same function of the same weights, with its last
    upsampling (a transposed convolution) and 3-channel output convolution computed at half resolution as
    ordinary convolutions on the four pixel phases (sub-pixel convolution), interleaved at the very end
    (DepthToSpace). onnxruntime's ConvTranspose has no blocked-layout kernel and its 3-channel Conv wastes
    most of one, while TorchScript's channels-last kernels do both well: this made a batch of 8 decodes
    7% faster on one thread (tests/test_onnx_export.py measures it), with outputs within 1e-5."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        layers = list(decoder.features)
        up, _, last = layers[-3:]
        self.project, self.bottom_channels = decoder.project, decoder.bottom_channels
        self.body = torch.nn.Sequential(*layers[:-3])
        with torch.no_grad():
            w4 = up.folded_weight()  # (in, mid, 4, 4)
            cin, mid = w4.shape[:2]
            k1 = w4.new_zeros(mid, 2, 2, cin, 3, 3)  # output channel (mid, phase row, phase column)
            for (a, dy), ky in _TAPS.items():
                for (b, dx), kx in _TAPS.items():
                    k1[:, a, b, :, dy + 1, dx + 1] = w4[:, :, ky, kx].T
            w = last.weight  # (out, mid, 3, 3) at full resolution
            out = w.shape[0]
            k2 = w.new_zeros(out, 2, 2, mid, 2, 2, 3, 3)
            for a2 in (0, 1):
                for b2 in (0, 1):
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            row, a = divmod(a2 + dy, 2)
                            col, b = divmod(b2 + dx, 2)
                            k2[:, a2, b2, :, a, b, row + 1, col + 1] += w[:, :, dy + 1, dx + 1]
        self.register_buffer("k1", k1.reshape(mid * 4, cin, 3, 3))
        self.register_buffer("b1", up.bias.detach().repeat_interleave(4))
        self.register_buffer("k2", k2.reshape(out * 4, mid * 4, 3, 3))
        self.register_buffer("b2", last.bias.detach().repeat_interleave(4))

    @staticmethod
    def fits(module: torch.nn.Module) -> bool:
        from training.vae import Decoder, UpsampleConv

        layers = list(getattr(module, "features", []))
        return (isinstance(module, Decoder) and len(layers) >= 3 and isinstance(layers[-3], UpsampleConv)
                and isinstance(layers[-2], torch.nn.SiLU) and isinstance(layers[-1], torch.nn.Conv2d)
                and layers[-1].kernel_size == (3, 3) and layers[-1].padding == (1, 1))

    def forward(self, z):
        from torch.nn import functional as F

        from training.vae import BOTTOM

        h = F.silu(self.project(z)).view(-1, self.bottom_channels, BOTTOM, BOTTOM)
        h = F.silu(F.conv2d(self.body(h), self.k1, self.b1, padding=1))
        return F.pixel_shuffle(torch.sigmoid(F.conv2d(h, self.k2, self.b2, padding=1)), 2)


def _export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str]):
    if _SubPixelTail.fits(module):
        module = _SubPixelTail(module).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter is chatty (progress lines, warnings about torchvision); keep the CLI output readable.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), input_names=inputs, output_names=outputs,
            dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False,
        )


def check_parity(vae: VAE, folder: Path, tolerance: float = PARITY_TOLERANCE) -> dict:
    """Largest absolute difference of TorchScript and ONNX from eager, on fresh random inputs."""
    from model.runtime import load_backend  # the service's own loaders: test what it will run

    size, latent = vae.cfg.image_size, vae.cfg.latent_dim
    x = torch.rand(3, 3, size, size)
    z = torch.randn(3, latent)
    with torch.no_grad():
        mu, logvar = vae.encoder(x)
        image = vae.decoder(z)
    errors = {}
    for backend in BACKEND_FILES:
        run = load_backend(folder, backend)
        got_mu, got_logvar = run.encode(x.numpy())
        got_image = run.decode(z.numpy())
        errors[backend] = float(max(
            np.abs(got_mu - mu.numpy()).max(),
            np.abs(got_logvar - logvar.numpy()).max(),
            np.abs(got_image - image.numpy()).max(),
        ))
    worst = max(errors.values())
    if not worst <= tolerance:  # also catches NaN
        raise ExportError(f"exported model differs from eager by {worst:.2e} (> {tolerance:.0e}): {errors}")
    return errors


def check_destination(run: Path, out: Path) -> None:
    """Export replaces --out whole: refuse anything but a new folder, an empty one, or an earlier
    export (it has model.json). A run folder or a folder of other files would be deleted."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a model directory")
    if out.resolve() == run.resolve() or out.resolve() in run.resolve().parents:
        raise ExportError(f"--out {out} holds the run {run} itself; export to a folder of its own, "
                          f"e.g. --out {run / 'model'}")
    if out.is_dir() and any(out.iterdir()) and not (out / "model.json").exists():
        raise ExportError(f"--out {out} holds files but no model.json: export replaces its folder whole, "
                          "so give a new or empty folder (or an earlier export to replace)")


def export(run: str | Path, out: str | Path, weights: str = "final") -> dict:
    run, out = Path(run), Path(out)
    vae, state = load_vae(run, weights)
    if not state.get("latent_prior"):
        # Only a run's end fits one: decoding N(0, I) instead would give this model's blurred noise.
        raise ExportError(f"{run / 'checkpoint.pt'} has no sampling distribution fitted to its weights: the run "
                          f"stopped before its end (epoch {state['epoch']}). Finish it (python -m training.train "
                          f"--out {run} --resume) or fit one (python -m training.prior {run})")
    check_destination(run, out)
    size, latent = vae.cfg.image_size, vae.cfg.latent_dim
    example_x = torch.rand(2, 3, size, size)
    example_z = torch.randn(2, latent)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a server running as another user
    try:
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(vae.encoder, example_x), staging / "encoder.pt")
            torch.jit.save(torch.jit.trace(vae.decoder, example_z), staging / "decoder.pt")
        _export_onnx(vae.encoder, example_x, staging / "encoder.onnx", ["image"], ["mu", "logvar"])
        _export_onnx(vae.decoder, example_z, staging / "decoder.onnx", ["z"], ["image"])
        sampling = prior.write(state["latent_prior"], staging)

        metrics_file = run / "metrics.json"
        try:
            metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        except (OSError, ValueError) as exc:
            raise ExportError(f"{metrics_file} cannot be read ({exc}): move it aside to export without "
                              "the run's metrics") from None
        if metrics.get("training", {}).get("steps") != state.get("final_step", state["step"]):
            # Written at the end of an earlier stretch of a run that was resumed and stopped again:
            # its numbers belong to other weights, and are not shipped as these ones'.
            metrics = {}
        metrics.setdefault("training", {"epochs": state["epoch"], "steps": state["step"]})
        if weights == "best":
            metrics = checkpoint.best_metrics(metrics, state["best"])
        files = sorted(p.name for p in staging.iterdir())
        meta = {
            "format_version": FORMAT_VERSION,
            "image_size": size,
            "latent_dim": latent,
            "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0],
                      "colour": "RGB", "preprocessing": "EXIF-upright, alpha on white, padded square with white"},
            "output": {"name": "image", "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0]},
            "latent": sampling,
            "files": {name: hashlib.sha256((staging / name).read_bytes()).hexdigest() for name in files},
            "architecture": vae.cfg.to_dict(),
            "loss": state.get("loss_config", {}),
            "training": metrics["training"],
            "metrics": metrics.get("validation", {}),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "exported_from": run.name,
            "torch_version": torch.__version__,
        }
        (staging / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        meta["parity_max_abs_error"] = check_parity(vae, staging)
        (staging / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

        # Swap the finished directory into place; the old one is removed only afterwards.
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        staging.rename(out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.export", description="Export a run for the service.")
    p.add_argument("run", help="training run folder (holds checkpoint.pt)")
    p.add_argument("--out", required=True,
                   help="model directory to write: a new or empty folder, or an earlier export (replaced whole)")
    p.add_argument("--weights", choices=WEIGHTS, default="final",
                   help="the last weights, or those kept at the best validation PSNR")
    args = p.parse_args(argv)
    earlier = Path(args.out, "model.json").is_file()
    try:
        meta = export(args.run, args.out, args.weights)
    except ExportError as exc:
        sys.exit(f"error: {exc}")
    sizes = ", ".join(f"{n} {Path(args.out, n).stat().st_size / 1e6:.1f} MB" for n in meta["files"])
    replaced = " (replacing the model that was there)" if earlier else ""
    print(f"exported {args.run} -> {args.out}{replaced}: {sizes}; parity {meta['parity_max_abs_error']}")


if __name__ == "__main__":
    main()
