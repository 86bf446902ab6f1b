"""The weights' moving average: its arithmetic, and how training keeps and exports it."""
import pytest

from tests.conftest import TINY_MODEL_FLAGS, needs_torch

pytestmark = needs_torch


def test_the_average_follows_the_warm_up_decay_by_hand():
    import torch

    from training.ema import EMA

    model = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=0)  # decay min(0.5, 1/10) = 0.1: mostly the new weights
    for averaged, old, new in zip(ema.module.parameters(), start, model.parameters()):
        assert torch.allclose(averaged, 0.1 * old + 0.9 * new, atol=1e-6)
    before = [p.detach().clone() for p in ema.module.parameters()]
    ema.update(model, step=1000)  # warm-up over: the set decay
    for averaged, old, new in zip(ema.module.parameters(), before, model.parameters()):
        assert torch.allclose(averaged, 0.5 * old + 0.5 * new, atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_training_is_unchanged_and_the_average_is_what_is_saved(tmp_path, synthetic_dir):
    import torch

    from training import checkpoint
    from training.train import main

    flags = ["--data", str(synthetic_dir), "--epochs", "3", "--lr", "3e-3", "--precision", "fp32", *TINY_MODEL_FLAGS]
    plain = main([*flags, "--out", str(tmp_path / "plain"), "--ema", "0"])
    averaged = main([*flags, "--out", str(tmp_path / "ema"), "--ema", "0.9"])
    assert (plain["training"]["ema"], averaged["training"]["ema"]) == (0.0, 0.9)
    a = checkpoint.load(tmp_path / "plain" / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "ema" / "checkpoint.pt")
    assert "train_model" not in a
    # The average never feeds back: the optimiser's weights follow the same path as without it...
    for name, weight in a["model"].items():
        assert torch.allclose(b["train_model"][name], weight, atol=1e-5), name
    # ...while the saved (exported) weights are the average, and the metrics are measured on them.
    assert any(not torch.allclose(b["model"][k], v) for k, v in b["train_model"].items())
    assert averaged["validation"]["mse"] != plain["validation"]["mse"]


def test_resume_restores_both_the_average_and_the_optimisers_weights(tmp_path, synthetic_dir):
    import torch

    from training import checkpoint
    from training.train import main

    run = tmp_path / "run"
    main(["--data", str(synthetic_dir), "--out", str(run), "--epochs", "2", "--lr", "3e-3", "--ema", "0.9",
          *TINY_MODEL_FLAGS])
    first = checkpoint.load(run / "checkpoint.pt")
    # Resuming with nothing left to train must give back both sets of weights exactly, each from its
    # own key: loading the average into the optimiser (or copying it afresh) would change one of them.
    main(["--out", str(run), "--resume", "--epochs", "2"])
    again = checkpoint.load(run / "checkpoint.pt")
    for key in ("model", "train_model"):
        assert all(torch.equal(again[key][k], v) for k, v in first[key].items()), key
    assert any(not torch.equal(first["model"][k], v) for k, v in first["train_model"].items())
