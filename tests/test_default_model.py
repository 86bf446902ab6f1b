"""The committed default model (model/default), run as the service runs it (ONNX Runtime) on the real
catalogue validation photos: it keeps its PSNR floor, and it is the model its model.json (and so the
README and GET /health) describes. Whether its pictures look like cars is tests/test_perceptual.py's bar."""
import json

import numpy as np
import pytest
import torch

from benchmarks.evaluate_runs import measurer
from model.images import load_square
from tests.conftest import ROOT, SHARED_DATA, catalogue_rows
from tests.support.bar import PSNR_FLOOR

DEFAULT = ROOT / "model" / "default"




def test_the_default_model_keeps_its_psnr_floor_on_the_catalogue_validation_photos():
    size, measure = measurer(DEFAULT)
    rows = catalogue_rows("val")
    photos = np.stack([load_square((SHARED_DATA / row["file"]).read_bytes(), size) for row in rows])
    metrics = measure(torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous())
    recorded = json.loads((DEFAULT / "model.json").read_text())["metrics"]
    assert size == 128 and len(rows) >= 50
    assert metrics["psnr"] >= PSNR_FLOOR, metrics
    # What the trainer measured on the GPU in PyTorch, the exported files reproduce here.
    assert metrics["psnr"] == pytest.approx(recorded["psnr"], abs=0.01)
    assert metrics["ssim"] == pytest.approx(recorded["ssim"], abs=0.002)
    assert metrics["kl"] == pytest.approx(recorded["kl"], rel=1e-3)
