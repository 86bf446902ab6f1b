"""Item 6 of issue 20: ONNX Runtime as the service runs it is at least as fast as TorchScript.

Before, onnxruntime ran a thread per core and let idle threads spin: on a 2-core machine with other
work on it (as a Lambda's 1.16 vCPU of time is, spread over 2 visible cores) a batch of 8 decodes took
2.5x as long, slower than TorchScript. The full side-by-side table: python -m benchmarks.serve_latency."""

import numpy as np
import pytest

from model.runtime import Model, onnx_threads
from tests.conftest import BUNDLED_MODEL
from tests.support.timing import interleaved_p50


def test_onnx_threads_follow_the_lambdas_cpu_share():
    assert onnx_threads({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}) == 1  # 1.16 vCPU: one thread
    assert onnx_threads({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240"}) == min(5, __import__("os").cpu_count())
    assert onnx_threads({"ORT_THREADS": "3", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}) == 3
    assert onnx_threads({}) == __import__("os").cpu_count()


def test_the_service_sessions_do_not_spin(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
    model = Model(BUNDLED_MODEL, "onnx")
    for session in (model._backend._encoder, model._backend._decoder):
        options = session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnx_decodes_and_encodes_at_least_as_fast_as_torchscript_per_core(monkeypatch):
    """One thread each, as a Lambda of 2,048 MB gives one core's worth: interleaved in random order, so
    other work on the machine slows both alike; p50 of 45 runs after warming up."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
    onnx = Model(BUNDLED_MODEL, "onnx")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        script = Model(BUNDLED_MODEL, "torchscript")
        z = np.random.default_rng(0).standard_normal((8, onnx.latent_dim)).astype(np.float32)
        x = np.random.default_rng(0).random((2, 3, onnx.image_size, onnx.image_size)).astype(np.float32)
        work = {(name, kind): (lambda m=m, kind=kind: m.decode(z) if kind == "decode 8" else m.encode(x))
                for name, m in (("onnx", onnx), ("torchscript", script)) for kind in ("decode 8", "encode 2")}
        p50 = interleaved_p50(work)
    finally:
        torch.set_num_threads(threads)
    print({f"{name} {kind}": round(v * 1000, 1) for (name, kind), v in p50.items()})
    # Per core, onnxruntime encodes in about 0.55x TorchScript's time and decodes a batch of 8 in 0.8x to 1.1x
    # (TorchScript's channels-last kernels are good at the decoder's last, 3-channel convolution): the
    # margins leave room for a busy machine, not for spinning threads (2.5x).
    assert p50["onnx", "encode 2"] <= 0.9 * p50["torchscript", "encode 2"], p50
    assert p50["onnx", "decode 8"] <= 1.25 * p50["torchscript", "decode 8"], p50
