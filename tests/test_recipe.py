"""Recipes (recipes/*.py) and what training says about its time: settings from a file, flags on top,
mistakes refused by name; an estimate of the time left, and a bar that moves toward --max-time."""
import pytest

from tests.conftest import ROOT, TINY_MODEL_FLAGS, needs_torch

pytestmark = needs_torch


def test_a_recipe_replaces_the_defaults_and_flags_still_win(tmp_path):
    from training.config import parse

    recipe = tmp_path / "r.py"
    recipe.write_text('beta = 0.02\nlr = 3e-4\nval_filter = ["white_background=1"]\nNOTES = "for other stages"\n')
    s, resuming = parse(["--recipe", str(recipe), "--data", "d", "--out", str(tmp_path / "run"), "--lr", "1e-4"])
    assert not resuming and (s.beta, s.lr, s.val_filter, s.recipe) == (0.02, 1e-4, ["white_background=1"], str(recipe))
    assert s.epochs == 100 and s.batch_size == 64  # the rest keep the trainer's defaults


@pytest.mark.parametrize("text, says", [
    ("betta = 0.1\n", "'betta' is not a training setting"),
    ("beta = -1\n", "beta = -1: --beta must be >= 0"),
    ("image_size = 100\n", "--image-size takes one of 64, 128, 256"),
    ("beta = \n", "SyntaxError"),
])
def test_a_recipe_mistake_is_refused_by_name(tmp_path, text, says):
    from training.config import parse

    recipe = tmp_path / "r.py"
    recipe.write_text(text)
    with pytest.raises(SystemExit) as stop:
        parse(["--recipe", str(recipe), "--data", "d", "--out", str(tmp_path / "run")])
    assert str(recipe) in str(stop.value) and says in str(stop.value)


def test_the_default_recipe_states_the_default_models_settings():
    import json

    from training.config import parse

    s, _ = parse(["--recipe", str(ROOT / "recipes" / "default.py"), "--out", "unused"])
    model = json.loads((ROOT / "model" / "default" / "model.json").read_text())
    assert s.data == model["training"]["data"] and s.val_filter == model["training"]["val_filter"]
    assert s.beta == model["loss"]["beta"] and s.ema == model["training"]["ema"]
    assert {k: getattr(s, k) for k in model["architecture"]} == model["architecture"]


def test_a_recipe_run_trains_and_records_its_recipe(tmp_path, synthetic_dir):
    import json

    from training.train import main

    recipe = tmp_path / "tiny.py"
    recipe.write_text(f"data = {str(synthetic_dir)!r}\nepochs = 2\nbeta = 0.05\n")
    result = main(["--recipe", str(recipe), "--out", str(tmp_path / "run"), *TINY_MODEL_FLAGS])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert result["training"]["epochs"] == 2 and config["recipe"] == str(recipe) and config["beta"] == 0.05
    # Resumed with its recipe named again, the run's own settings stand: nothing refused, nothing left to train.
    assert main(["--out", str(tmp_path / "run"), "--resume", "--recipe", str(recipe)]) is None


def test_the_time_left_follows_the_pace_and_the_time_limit():
    from training.schedule import Schedule, duration, time_left

    by_steps = Schedule(total_steps=1000, max_time=None)
    assert time_left(by_steps, 0, 0.0, (0, 0.0)) is None  # no pace yet
    assert time_left(by_steps, 100, 10.0, (0, 0.0)) == pytest.approx(90.0)  # 10 steps/s, 900 steps left
    timed = Schedule(total_steps=10**6, max_time=60.0)  # the clock ends it long before the steps
    assert time_left(timed, 100, 10.0, (0, 0.0)) == pytest.approx(50.0)
    resumed = Schedule(total_steps=1000, max_time=None)
    assert time_left(resumed, 600, 110.0, (500, 100.0)) == pytest.approx(40.0)  # this session's pace
    assert [duration(t) for t in (42, 600, 3 * 3600 + 20 * 60)] == ["42 s", "10 min", "3 h 20 min"]


def test_under_max_time_the_bar_counts_toward_the_limit(capsys):
    from training.report import ProgressBar, plan_line
    from training.schedule import Schedule

    timed = Schedule(total_steps=100 * 1000, max_time=600.0)
    bar = ProgressBar(timed, 0, 0.0, enabled=True)
    for step, elapsed in ((10, 60.0), (20, 120.0), (30, 300.0)):
        bar.update(step, elapsed)
    assert bar.bar.total == 100 and bar.bar.n == pytest.approx(50.0)  # 300 of 600 s, though epoch 1 of 100
    assert "left" in bar.eta_line(30, 300.0) and "5 min" in bar.eta_line(30, 300.0)
    bar.close()
    assert "or 10 min (--max-time), whichever comes first" in plan_line(timed, 100, 1000, 0)
    steps = ProgressBar(Schedule(total_steps=50, max_time=None), 10, 5.0, enabled=True)
    steps.update(11, 6.0)
    assert (steps.bar.total, steps.bar.n) == (50, 11)
    steps.close()


SHARPEN_FAST = ["--steps", "2", "--batch-size", "4", "--disc-start", "1", "--eval-every", "2", "--perceptual-size", "64",
                "--disc-channels", "8"]


def test_the_reproduce_script_trains_sharpens_fits_and_exports_to_a_folder_of_its_own(tmp_path, synthetic_dir):
    import json
    import os
    import subprocess
    import sys

    recipe = tmp_path / "tiny.py"
    flags = dict(zip([f.lstrip("-").replace("-", "_") for f in TINY_MODEL_FLAGS[::2]], TINY_MODEL_FLAGS[1::2]))
    recipe.write_text(f"data = {str(synthetic_dir)!r}\nepochs = 1\n"
                      + "".join(f"{k} = {float(v) if '.' in v else int(v)!r}\n" for k, v in flags.items())
                      + 'PRIOR_ARGS = ["--copies", "1"]\n'
                      + f"SHARPEN_ARGS = {['--data', str(synthetic_dir), *SHARPEN_FAST]!r}\n")
    run = tmp_path / "runs" / "tiny"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_default.sh"), str(run), str(recipe)], cwd=tmp_path,
                          env={**os.environ, "PY": sys.executable}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    model = json.loads((tmp_path / "runs" / "tiny-model" / "model.json").read_text())
    assert model["image_size"] == 64 and f"--model-dir {run}-model" in done.stdout
    assert model["training"]["stage"] == "sharpen" and model["exported_from"] == "tiny-sharp"
    assert not (ROOT / "runs" / "tiny").exists()  # the run went where it was told, not into the repository


def test_sample_frames_are_named_as_the_readme_says(tmp_path):
    from training.report import frame_path

    assert frame_path(tmp_path, 3, 0).relative_to(tmp_path).as_posix() == "samples/epoch_0003.png"
    assert frame_path(tmp_path, 3, 11).relative_to(tmp_path).as_posix() == "samples/epoch_0003_00011.png"
