"""Running an exported model directory on the CPU.

A model directory (written by `python -m training.export`) holds model.json and the
encoder/decoder as ONNX and as jit-traced TorchScript. The Lambda runs the ONNX files
with onnxruntime (torch does not fit in a Lambda package); where torch is installed the
TorchScript files load too and give the same results. Either way the model is plain
numpy in, numpy out. Samples are decoded from codes drawn from latent_prior.npz, the mixture of
Gaussians (format 2) or the one Gaussian (format 1) fitted to the training photos' codes
(model/prior.py); a model directory without that file samples N(0, I).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from model import prior

FORMAT_VERSION = 2  # 2: latent_prior.npz may hold a mixture (model/prior.py)
FORMAT_VERSIONS = (1, 2)  # what this runtime serves
BACKEND_FILES = {
    "onnx": ("encoder.onnx", "decoder.onnx"),
    "torchscript": ("encoder.pt", "decoder.pt"),
}
PRIOR_FILE = "latent_prior.npz"


class ModelError(RuntimeError):
    """The model cannot be loaded. The message says why, in words fit for an API response."""


LAMBDA_MB_PER_VCPU = 1769  # Lambda gives one vCPU of time per 1,769 MB of memory


def onnx_threads(environ=os.environ) -> int:
    """onnxruntime's threads for one request (ORT_THREADS overrides): every core, except on Lambda. A
    function there sees 2 cores at any size up to 3,008 MB but is credited CPU time in proportion to its
    memory, one vCPU's worth per 1,769 MB (1.16 at 2,048 MB): a second thread has no time of its own to
    run in, only the first's to contend for (published measurements find a second thread pays off from
    about 3.5-4 GB). One thread per credited vCPU; on a shared 2-core machine one thread was as fast as two
    or faster (benchmarks/results/serve_latency.json)."""
    if (environ.get("ORT_THREADS") or "").isdigit() and int(environ["ORT_THREADS"]) > 0:
        return int(environ["ORT_THREADS"])
    cores = os.cpu_count() or 1
    memory = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if memory.isdigit():
        return max(1, min(cores, int(memory) // LAMBDA_MB_PER_VCPU))
    return cores


class _OnnxBackend:
    def __init__(self, folder: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = onnx_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No spin-waiting: by default onnxruntime's idle pool threads spin between (and after) operators.
        # A Lambda of 2,048 MB sees 2 cores but gets about 1.2 vCPU of time, and a spinning thread burns
        # that quota while the working one waits for it: with spinning, a batch of 8 decodes took 2.5x
        # as long on 2 busy cores (benchmarks/results/serve_latency.json), slower than TorchScript.
        # ORT_ALLOW_SPINNING=1 turns it back on (a machine with cores to spare may gain a little).
        spinning = "1" if os.environ.get("ORT_ALLOW_SPINNING", "0") == "1" else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        encoder, decoder = (str(folder / name) for name in BACKEND_FILES["onnx"])
        providers = ["CPUExecutionProvider"]
        self._encoder = ort.InferenceSession(encoder, options, providers=providers)
        self._decoder = ort.InferenceSession(decoder, options, providers=providers)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, logvar = self._encoder.run(None, {"image": x.astype(np.float32, copy=False)})
        return mu, logvar

    def decode(self, z: np.ndarray) -> np.ndarray:
        return self._decoder.run(None, {"z": z.astype(np.float32, copy=False)})[0]

    def signature(self) -> dict:
        """Each network's declared inputs and outputs: name -> shape (a symbolic dimension as None)."""
        def described(values):
            return {v.name: [d if isinstance(d, int) else None for d in v.shape] for v in values}

        return {network: (described(session.get_inputs()), described(session.get_outputs()))
                for network, session in (("encoder", self._encoder), ("decoder", self._decoder))}


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

    def signature(self) -> None:
        return None  # TorchScript keeps no declared names or shapes: the trial run checks it


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
    if version not in FORMAT_VERSIONS:
        raise ModelError(f"model format version {version!r} is not supported (this service reads versions "
                         f"{', '.join(map(str, FORMAT_VERSIONS))})")
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


def load_prior(folder: Path, latent_dim: int) -> prior.Mixture:
    """The sampling distribution in latent_prior.npz, checked for shape and finiteness."""
    try:
        return prior.load(folder / PRIOR_FILE, latent_dim)
    except prior.PriorError as exc:
        raise ModelError(str(exc)) from None


def _shape_text(shape) -> str:
    return "x".join("N" if d is None else str(d) for d in shape)


def check_model(model: "Model") -> None:
    """The loaded networks are the ones model.json describes, or ModelError says how they differ.

    Files whose hashes match can still be the wrong files (encoder and decoder swapped, another
    model's networks under this model.json, a wrong image_size): without this the load succeeds and
    every request fails. Checked: the declared input and output names and shapes (ONNX), then one
    encode -> decode of a grey image: shapes, finiteness and the output's value range."""
    meta, size, dim = model.metadata, model.image_size, model.latent_dim
    image_shape = [None, 3, size, size]  # NCHW RGB: the contract's layout
    section = lambda key: meta.get(key) if isinstance(meta.get(key), dict) else {}  # noqa: E731
    latent = section("latent")
    mu_logvar = latent.get("encoder_outputs") or ["mu", "logvar"]
    want = {
        "encoder": ({section("input").get("name", "image"): image_shape}, {name: [None, dim] for name in mu_logvar}),
        "decoder": ({"z": [None, dim]}, {section("output").get("name", "image"): image_shape}),
    }
    declared = model._backend.signature()
    if declared is not None:
        for network, (want_in, want_out) in want.items():
            for role, wanted, got in (("input", want_in, declared[network][0]),
                                      ("output", want_out, declared[network][1])):
                if list(got) != list(wanted):
                    raise ModelError(f"the {network}'s {role}s are {', '.join(got) or 'none'}, where model.json "
                                     f"describes {', '.join(wanted)}: the model files do not fit model.json")
                for name, shape in wanted.items():
                    have = got[name]
                    if len(have) != len(shape) or any(h is not None and w is not None and h != w
                                                      for h, w in zip(have, shape)):
                        raise ModelError(f"the {network}'s {role} {name} is {_shape_text(have)}, where model.json "
                                         f"says {_shape_text(shape)}: the model files do not fit model.json")
    low, high = (section("output").get("range") or [0.0, 1.0])[:2]
    try:
        mu, logvar = model.encode(np.full((1, 3, size, size), 0.5, np.float32))
        if np.shape(mu) != (1, dim) or np.shape(logvar) != (1, dim):
            raise ModelError(f"the encoder gives codes of shape {_shape_text(np.shape(mu))} for one image, "
                             f"where model.json says {dim}: the model files do not fit model.json")
        out = model.decode(np.asarray(mu, np.float32))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - each runtime raises its own types
        raise ModelError(f"the model does not run on a {size}x{size} image as model.json describes "
                         f"({exc.__class__.__name__}): the model files do not fit model.json") from exc
    if np.shape(out) != (1, 3, size, size):
        raise ModelError(f"the decoder gives images of shape {_shape_text(np.shape(out))}, where model.json says "
                         f"{_shape_text([1, 3, size, size])}: the model files do not fit model.json")
    if not (np.isfinite(mu).all() and np.isfinite(logvar).all() and np.isfinite(out).all()):
        raise ModelError("the model gives values that are not finite for a grey image")
    slack = 0.01 * (high - low)
    if out.min() < low - slack or out.max() > high + slack:
        raise ModelError(f"the decoder's output spans {out.min():.3g}..{out.max():.3g}, outside the range "
                         f"{low}..{high} of model.json")


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
        check_model(self)

    def sample_codes(self, rng: np.random.Generator, n: int, temperature: float = 1.0) -> np.ndarray:
        """n codes (n, latent_dim) to decode, drawn from the fitted prior (N(0, I) without one)."""
        return (self.prior or prior.standard_normal(self.latent_dim)).sample(rng, n, temperature)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 (N, 3, S, S) in [0, 1] -> (mu, logvar), each (N, latent_dim)."""
        return self._backend.encode(x)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(N, latent_dim) -> float32 (N, 3, S, S) in [0, 1]."""
        return self._backend.decode(z)
