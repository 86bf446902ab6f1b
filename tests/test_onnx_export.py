"""Item 6 of issue 20, the ONNX graph: training.export writes the decoder with its last upsampling and
output convolution as sub-pixel convolutions (no ConvTranspose at the end), the same function as the
model it came from, and no slower on ONNX Runtime than the transposed-convolution graph."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.conftest import BUNDLED_MODEL
from tests.support.timing import interleaved_p50
from training.export import _export_onnx, _SubPixelTail
from training.vae import VAE, VAEConfig, Decoder


def session(path, threads: int = 1):
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_a_small_decoder_exports_as_the_same_function_without_a_final_transposed_convolution(tmp_path):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=64, latent_dim=8, base_channels=8, max_channels=16)).eval()
    with torch.no_grad():  # weights away from their zero-initialised start, so every tap matters
        for p in vae.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert _SubPixelTail.fits(vae.decoder) and not _SubPixelTail.fits(vae.encoder)
    z = torch.randn(3, 8)
    _export_onnx(vae.decoder, z, tmp_path / "decoder.onnx", ["z"], ["image"])
    got = session(tmp_path / "decoder.onnx").run(None, {"z": z.numpy()})[0]
    with torch.no_grad():
        want = vae.decoder(z).numpy()
    assert got.shape == want.shape == (3, 3, 64, 64)
    assert np.abs(got - want).max() < 1e-5
    import onnx

    ops = [node.op_type for node in onnx.load(tmp_path / "decoder.onnx").graph.node]
    assert ops[-1] == "DepthToSpace" and "ConvTranspose" not in ops[ops.index("DepthToSpace") - 5:]


def test_the_bundled_decoder_rewritten_is_no_slower_on_onnxruntime(tmp_path, monkeypatch):
    # The bundled model's weights (from its TorchScript copy) exported twice: as the decoder is, ending in a
    # ConvTranspose, and as export writes it now; interleaved, one thread each.
    meta = json.loads((BUNDLED_MODEL / "model.json").read_text())
    decoder = Decoder(VAEConfig.from_dict(meta["architecture"])).eval()
    traced = torch.jit.load(str(BUNDLED_MODEL / "decoder.pt")).state_dict()
    decoder.load_state_dict({k: v for k, v in traced.items() if k in decoder.state_dict()})  # not the fold buffers
    z = np.random.default_rng(0).standard_normal((8, meta["latent_dim"])).astype(np.float32)
    _export_onnx(decoder, torch.from_numpy(z), tmp_path / "decoder.onnx", ["z"], ["image"])
    with monkeypatch.context() as plain:
        plain.setattr(_SubPixelTail, "fits", staticmethod(lambda module: False))
        _export_onnx(decoder, torch.from_numpy(z), tmp_path / "before.onnx", ["z"], ["image"])
    sessions = {"before": session(tmp_path / "before.onnx"), "rewritten": session(tmp_path / "decoder.onnx")}
    outputs = {name: s.run(None, {"z": z})[0] for name, s in sessions.items()}
    assert np.abs(outputs["before"] - outputs["rewritten"]).max() < 1e-4
    p50 = interleaved_p50({name: (lambda s=s: s.run(None, {"z": z})) for name, s in sessions.items()}, rounds=45)
    print({name: round(v * 1000, 1) for name, v in p50.items()})
    assert p50["rewritten"] <= 1.15 * p50["before"], p50  # measured: 0.93x; the margin is for a noisy shared CPU
