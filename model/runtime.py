"""Running an exported model directory on the CPU.

A model directory (written by `python -m training.export`) holds model.json and the
encoder/decoder as ONNX and as jit-traced TorchScript. The Lambda runs the ONNX files
with onnxruntime (torch does not fit in a Lambda package); where torch is installed the
TorchScript files load too and give the same results. Either way the model is plain
numpy in, numpy out. Samples are decoded from mean + temperature * L u with u ~ N(0, I),
where latent_prior.npz holds the Gaussian fitted to the training photos' codes; a
model directory without that file samples N(0, I).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
BACKEND_FILES = {
    "onnx": ("encoder.onnx", "decoder.onnx"),
    "torchscript": ("encoder.pt", "decoder.pt"),
}
PRIOR_FILE = "latent_prior.npz"


class ModelError(RuntimeError):
    """The model cannot be loaded. The message says why, in words fit for an API response."""


class _OnnxBackend:
    def __init__(self, folder: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One request at a time per Lambda container: use every core for that request.
        options.intra_op_num_threads = os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        encoder, decoder = (str(folder / name) for name in BACKEND_FILES["onnx"])
        providers = ["CPUExecutionProvider"]
        self._encoder = ort.InferenceSession(encoder, options, providers=providers)
        self._decoder = ort.InferenceSession(decoder, options, providers=providers)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, logvar = self._encoder.run(None, {"image": x.astype(np.float32, copy=False)})
        return mu, logvar

    def decode(self, z: np.ndarray) -> np.ndarray:
        return self._decoder.run(None, {"z": z.astype(np.float32, copy=False)})[0]


class _TorchScriptBackend:
    def __init__(self, folder: Path):
        import torch

        self._torch = torch
        encoder, decoder = (folder / name for name in BACKEND_FILES["torchscript"])
        self._encoder = torch.jit.load(str(encoder), map_location="cpu").eval()
        self._decoder = torch.jit.load(str(decoder), map_location="cpu").eval()

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.inference_mode():
            mu, logvar = self._encoder(self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return mu.numpy(), logvar.numpy()

    def decode(self, z: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._decoder(self._torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))).numpy()


def load_backend(folder: str | Path, backend: str):
    """The raw encoder/decoder pair, without metadata checks (export uses this for its parity test)."""
    folder = Path(folder)
    if backend == "onnx":
        return _OnnxBackend(folder)
    if backend == "torchscript":
        return _TorchScriptBackend(folder)
    raise ModelError(f"unknown model backend '{backend}': use one of {sorted(BACKEND_FILES)}")


def read_metadata(folder: Path) -> dict:
    path = folder / "model.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"no model.json in {folder}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model.json in {folder} is unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"model.json in {folder} is not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"model format version {version!r} is not supported (this service reads version {FORMAT_VERSION})")
    for key in ("image_size", "latent_dim"):
        if not isinstance(meta.get(key), int) or meta[key] < 1:
            raise ModelError(f"model.json in {folder} has no valid '{key}'")
    return meta


def model_files(meta: dict, backend: str) -> tuple[str, ...]:
    """The files a backend needs besides model.json: its encoder and decoder, and the prior if named."""
    if backend not in BACKEND_FILES:
        raise ModelError(f"unknown model backend '{backend}': use one of {sorted(BACKEND_FILES)}")
    latent = meta.get("latent")
    prior = latent.get("prior_file") if isinstance(latent, dict) else None
    if prior is not None and prior != PRIOR_FILE:  # a fixed name: model.json never chooses a path
        raise ModelError(f"model.json names an unknown prior file {str(prior)[:100]!r}")
    return BACKEND_FILES[backend] + ((PRIOR_FILE,) if prior else ())


def load_prior(folder: Path, latent_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), scale_tril (D, D)) from latent_prior.npz, checked for shape and finiteness."""
    try:
        with np.load(folder / PRIOR_FILE, allow_pickle=False) as arrays:
            mean, scale = arrays["mean"].astype(np.float32), arrays["scale_tril"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"{PRIOR_FILE} is unreadable ({exc.__class__.__name__})") from None
    if mean.shape != (latent_dim,) or scale.shape != (latent_dim, latent_dim):
        raise ModelError(f"{PRIOR_FILE} does not match latent size {latent_dim}")
    if not (np.isfinite(mean).all() and np.isfinite(scale).all()):
        raise ModelError(f"{PRIOR_FILE} holds values that are not finite")
    return mean, scale


def verify_files(folder: Path, meta: dict, names: tuple[str, ...]) -> None:
    """A missing, truncated or swapped file fails here, with its name, not deep in a runtime."""
    hashes = meta.get("files", {})
    for name in names:
        path = folder / name
        if not path.is_file():
            raise ModelError(f"model file {name} is missing from {folder}")
        expected = hashes.get(name)
        if expected is None:
            raise ModelError(f"model.json lists no hash for {name}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise ModelError(f"model file {name} is corrupt (its SHA-256 does not match model.json)")


class Model:
    """An exported VAE ready for inference: encode images, decode latents, numpy in and out."""

    def __init__(self, folder: str | Path, backend: str = "onnx", source: str | None = None):
        folder = Path(folder)
        if backend not in BACKEND_FILES:
            raise ModelError(f"unknown model backend '{backend}': use one of {sorted(BACKEND_FILES)}")
        self.metadata = read_metadata(folder)
        files = model_files(self.metadata, backend)
        verify_files(folder, self.metadata, files)
        try:
            self._backend = load_backend(folder, backend)
        except ModelError:
            raise
        except ImportError as exc:
            raise ModelError(f"the {backend} runtime is not installed ({exc})") from None
        except Exception as exc:  # runtimes raise their own types for unparsable files
            raise ModelError(f"the {backend} model files could not be loaded ({exc.__class__.__name__})") from exc
        self.folder = folder
        self.backend = backend
        self.source = source or str(folder)
        self.image_size: int = self.metadata["image_size"]
        self.latent_dim: int = self.metadata["latent_dim"]
        self.prior = load_prior(folder, self.latent_dim) if PRIOR_FILE in files else None

    def latents(self, u: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """Codes to sample from standard-normal draws u (N, latent_dim): mean + temperature * L u
        under the fitted prior, temperature * u without one."""
        if self.prior is None:
            return (u * temperature).astype(np.float32)
        mean, scale = self.prior
        return (mean + temperature * (u @ scale.T)).astype(np.float32)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 (N, 3, S, S) in [0, 1] -> (mu, logvar), each (N, latent_dim)."""
        return self._backend.encode(x)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(N, latent_dim) -> float32 (N, 3, S, S) in [0, 1]."""
        return self._backend.decode(z)
