"""Shared fixtures: real photos from ../shared/data, synthetic cars, a tiny exported model."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = ROOT / "model" / "default"
sys.path.insert(0, str(ROOT))
# HANDLER_ROOT points the handler tests at another copy of handler.py + model/, such as
# the unzipped Lambda package (tests/test_packaging.py runs them that way on Python 3.12).
if os.environ.get("HANDLER_ROOT"):
    sys.path.insert(0, os.environ["HANDLER_ROOT"])

try:
    import torch  # noqa: F401

    HAS_TORCH = True
except ImportError:  # the Python 3.12 run mirrors the Lambda: no torch
    HAS_TORCH = False

from tests.support.photos import SHARED_DATA, catalogue_rows, real_photo_paths  # noqa: E402,F401 - tests import them here

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch (the Lambda-like environment has none)")


@pytest.fixture(scope="session")
def real_photos() -> list[Path]:
    return real_photo_paths()


@pytest.fixture(scope="session")
def real_jpeg(real_photos) -> bytes:
    return real_photos[0].read_bytes()


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    from training.synthetic import write_cars

    folder = tmp_path_factory.mktemp("synthetic")
    write_cars(folder, 48, seed=1)
    return folder


def png_of(image, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **save_args)
    return out.getvalue()


TINY_MODEL_FLAGS = ["--image-size", "64", "--latent-dim", "16", "--base-channels", "8", "--max-channels", "32",
                    "--res-blocks", "0", "--batch-size", "16", "--sample-every", "1", "--checkpoint-interval", "0"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_dir) -> Path:
    """A real (very short) training run on synthetic cars."""
    if not HAS_TORCH:
        pytest.skip("needs torch")
    from training.train import main

    run = tmp_path_factory.mktemp("runs") / "tiny"
    main(["--data", str(synthetic_dir), "--out", str(run), "--epochs", "2", *TINY_MODEL_FLAGS])
    return run


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_run) -> Path:
    from training.export import export

    out = tmp_path_factory.mktemp("models") / "tiny"
    export(tiny_run, out)
    return out


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """One local stack (serverless-offline + page server) for every test that needs it; at the
    end it must stop cleanly on Ctrl-C, leaving no process or port behind."""
    from tests.support.stack import LocalStack

    stack = LocalStack(tmp_path_factory.mktemp("stack") / "local_stack.log")
    try:
        stack.wait_ready()
    except RuntimeError as exc:
        stack.stop()
        pytest.fail(str(exc))
    yield stack
    problems = stack.stop()
    assert not problems, f"{problems}\n{stack.log_tail()}"
