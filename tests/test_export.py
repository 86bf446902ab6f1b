"""Export: TorchScript and ONNX files that match the eager model, and model.json."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import needs_torch

pytestmark = needs_torch


def test_torchscript_and_onnx_match_eager_within_1e_4(tiny_run, tiny_model_dir):
    import onnxruntime as ort
    import torch

    from training.export import load_vae

    vae, _ = load_vae(tiny_run)
    encoder_ts = torch.jit.load(str(tiny_model_dir / "encoder.pt"))
    decoder_ts = torch.jit.load(str(tiny_model_dir / "decoder.pt"))
    encoder_onnx = ort.InferenceSession(str(tiny_model_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder_onnx = ort.InferenceSession(str(tiny_model_dir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1234)
    for batch in (1, 5):  # a batch size the trace never saw, too
        x = rng.random((batch, 3, 64, 64), dtype=np.float32)
        z = rng.standard_normal((batch, 16)).astype(np.float32)
        with torch.no_grad():
            mu, logvar = (t.numpy() for t in vae.encoder(torch.from_numpy(x)))
            image = vae.decoder(torch.from_numpy(z)).numpy()
            ts_mu, ts_logvar = (t.numpy() for t in encoder_ts(torch.from_numpy(x)))
            ts_image = decoder_ts(torch.from_numpy(z)).numpy()
        onnx_mu, onnx_logvar = encoder_onnx.run(None, {"image": x})
        onnx_image = decoder_onnx.run(None, {"z": z})[0]
        for got, want in [(ts_mu, mu), (ts_logvar, logvar), (ts_image, image),
                          (onnx_mu, mu), (onnx_logvar, logvar), (onnx_image, image)]:
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-4


def test_model_json_describes_the_files(tiny_model_dir):
    import hashlib

    meta = json.loads((tiny_model_dir / "model.json").read_text())
    assert meta["format_version"] == 2 and meta["image_size"] == 64 and meta["latent_dim"] == 16
    assert meta["input"]["range"] == [0.0, 1.0] and meta["output"]["range"] == [0.0, 1.0]
    assert set(meta["files"]) == {"encoder.pt", "decoder.pt", "encoder.onnx", "decoder.onnx", "latent_prior.npz"}
    assert meta["latent"]["prior_file"] == "latent_prior.npz" and meta["latent"]["prior_fitted_on"]["codes"] > 0
    for name, digest in meta["files"].items():
        assert hashlib.sha256((tiny_model_dir / name).read_bytes()).hexdigest() == digest
    assert "psnr" in meta["metrics"] and meta["training"]["epochs"] == 2
    assert all(err <= 1e-4 for err in meta["parity_max_abs_error"].values())
    assert tiny_model_dir.stat().st_mode & 0o777 == 0o755, "readable by a server running as another user"


def test_both_runtimes_give_the_same_results(tiny_model_dir):
    from model.runtime import Model

    onnx, script = Model(tiny_model_dir, "onnx"), Model(tiny_model_dir, "torchscript")
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    assert np.abs(onnx.encode(x)[0] - script.encode(x)[0]).max() <= 1e-4
    z = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    assert np.abs(onnx.decode(z) - script.decode(z)).max() <= 1e-4


def test_export_replaces_an_existing_directory_and_errors_name_the_run(tmp_path, tiny_run, capsys):
    from training.export import ExportError, export, main

    out = tmp_path / "model"
    main([str(tiny_run), "--out", str(out)])
    assert "replacing" not in capsys.readouterr().out
    (out / "stale.txt").write_text("left by the earlier export")
    main([str(tiny_run), "--out", str(out)])
    assert f"-> {out} (replacing the model that was there)" in capsys.readouterr().out
    assert not (out / "stale.txt").exists() and (out / "model.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no staging folders left behind"
    with pytest.raises(ExportError, match="nowhere"):
        export(tmp_path / "nowhere", tmp_path / "m2")


def test_export_never_replaces_a_folder_that_is_not_an_earlier_export(tmp_path, tiny_run):
    # Export swaps its folder in whole: pointed at the run itself, or at a folder of other files,
    # it used to delete them.
    from training.export import ExportError, export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ExportError, match="holds the run"):
        export(run, run)
    with pytest.raises(ExportError, match="holds the run"):
        export(run, tmp_path)  # the run's parent
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ExportError, match="no model.json"):
        export(run, tmp_path / "notes")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ExportError, match="is a file"):
        export(run, tmp_path / "file")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert set(before) <= set(after) and (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert export(run, tmp_path / "empty")["image_size"] == 64  # an empty folder is fine


def test_export_names_a_damaged_metrics_file(tmp_path, tiny_run):
    from training.export import ExportError, export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").write_text((run / "metrics.json").read_text()[:100])
    with pytest.raises(ExportError, match="metrics.json cannot be read"):
        export(run, tmp_path / "model")


def test_a_run_stopped_after_a_resume_is_not_exported_with_its_earlier_numbers(tmp_path, tiny_run):
    # A finished run resumed for more epochs, then killed: its checkpoint is an interval one (no
    # fitted sampling distribution), and metrics.json still describes the earlier end.
    import subprocess
    import sys

    from tests.conftest import ROOT
    from training import checkpoint
    from training.export import ExportError, export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = checkpoint.load(run / "checkpoint.pt")
    earlier = json.loads((run / "metrics.json").read_text())
    state["epoch"], state["step"] = state["epoch"] + 1, state["step"] + 3
    del state["latent_prior"], state["best"]["latent_prior"]  # as an interval checkpoint holds them
    checkpoint.save_atomic(state, run / "checkpoint.pt")

    with pytest.raises(ExportError, match="no sampling distribution.*training.prior"):
        export(run, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    fit = subprocess.run([sys.executable, "-m", "training.prior", str(run)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr[-2000:]
    meta = export(run, tmp_path / "model")
    assert meta["training"] == {"epochs": state["epoch"], "steps": state["step"]}
    assert meta["metrics"] == {} and earlier["validation"]["psnr"]  # not the earlier weights' PSNR
    assert meta["latent"]["prior_file"] == "latent_prior.npz"
    best = export(run, tmp_path / "best", weights="best")  # the refit covered the best weights too
    assert best["metrics"]["psnr"] == state["best"]["validation"]["psnr"]
