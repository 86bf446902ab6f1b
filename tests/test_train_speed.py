"""The speed benchmark's variants compute what the model computes: an A/B of speed between
them is a comparison of two ways to run the same network."""
import pytest

from tests.conftest import needs_torch

pytestmark = needs_torch
torch = pytest.importorskip("torch")

from benchmarks.train_speed import VARIANTS, apply_variant, variant_name  # noqa: E402
from training.vae import VAE, VAEConfig  # noqa: E402

COMPOSED = ["subpixel+s2d-ends", "subpixel+s2d-stage"]


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "model"] + COMPOSED)
def test_each_variant_computes_the_models_function(variant):
    torch.manual_seed(0)
    # Two residual blocks a stage: the blocked variants must find every layer of the stage they change.
    cfg = VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=32, res_blocks=2)
    model, other = VAE(cfg).double(), VAE(cfg).double()
    for weights in model.parameters():  # the residual blocks start as the identity: no zeros to hide behind
        torch.nn.init.normal_(weights, std=0.1)
    other.load_state_dict(model.state_dict())
    apply_variant(other, variant)
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    z = torch.randn(2, 16, dtype=torch.float64)
    for vae in (model, other):
        mu, logvar = vae.encoder(x)
        (mu.square().sum() + logvar.sum() + vae.decoder(z).square().sum()).backward()
    assert torch.allclose(other.encoder(x)[0], model.encoder(x)[0], atol=1e-10)
    assert torch.allclose(other.decoder(z), model.decoder(z), atol=1e-10)
    for (name, ours), theirs in zip(other.named_parameters(), model.parameters()):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-9), name
    # ...and really computes it another way: some layer no longer runs the model's own forward.
    replaced = [m for m in other.modules() if "forward" in vars(m)]
    assert replaced, f"{variant} changed nothing"


def test_an_unknown_variant_or_an_order_that_cannot_run_is_refused():
    assert variant_name("subpixel+s2d-ends") == "subpixel+s2d-ends"
    with pytest.raises(Exception, match="'s2d'"):
        variant_name("subpixel+s2d")
    # After a blocked variant, another would hand plain pixels to a layer that expects blocks.
    for order in ("s2d-ends+subpixel", "s2d-stage+s2d-ends"):
        with pytest.raises(Exception, match="last"):
            variant_name(order)
        with pytest.raises(Exception, match="last"):
            apply_variant(VAE(VAEConfig(image_size=64)), order)


@pytest.mark.parametrize("variant", list(VARIANTS) + COMPOSED)
def test_each_variant_compiles_to_one_graph_once_reading_only_the_model_and_batch(variant):
    """A graph break or a recompile per step would time the compiler, not the variant; a tensor from
    outside the model (a table kept in a closure, say) would be a graph input copied on every CUDA
    graph replay."""
    from contextlib import nullcontext

    from training.losses import LossConfig
    from training.config import defaults
    from training.step import forward_loss

    torch._dynamo.reset()
    settings = defaults()
    vae = VAE(VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=16, res_blocks=0))
    apply_variant(vae, variant)
    graphs = []

    def record(graph, example_inputs):  # a dynamo backend that keeps what each graph is called with
        graphs.append(example_inputs)
        return graph.forward

    compiled = torch.compile(forward_loss, backend=record, fullgraph=True)  # fullgraph: a break raises
    batches = [torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    for batch in batches:
        compiled(vae, batch, torch.device("cpu"), settings, LossConfig(beta=0.1), nullcontext())
    assert len(graphs) == 1
    ours = {id(t) for t in [*vae.parameters(), *vae.buffers(), batches[0]]}
    foreign = [value.shape for value in graphs[0] if isinstance(value, torch.Tensor) and id(value) not in ours]
    assert not foreign, foreign


def test_the_bytes_kept_for_backward_match_a_hand_count():
    """The explicit form keeps each upsampled tensor (4 pixels per input pixel) where the fold keeps
    its input: it keeps 3/4 of the upsampled tensors' bf16 bytes more, per image."""
    from benchmarks.train_speed import saved_bytes_per_image
    from training.config import defaults

    settings = defaults(["--image-size", "64", "--latent-dim", "16", "--base-channels", "8", "--max-channels", "32"])
    # The decoder's upsamplings at 64 px: (channels, input size) 32 at 4, 32 at 8, 16 at 16, 8 at 32.
    upsampled = sum(channels * (2 * size) ** 2 for channels, size in [(32, 4), (32, 8), (16, 16), (8, 32)])
    extra = saved_bytes_per_image(settings, "explicit-upsample") - saved_bytes_per_image(settings, "model")
    assert extra == 3 / 4 * upsampled * 2  # bytes per bf16 value


def test_the_fastest_variant_is_read_from_finished_settings_only(tmp_path):
    import json

    from benchmarks.train_speed import fastest_variant

    results = tmp_path / "train_speed_cuda.json"
    runs = [{"variant": "model", "images_per_second": 20000.0}, {"variant": "s2d-stage", "error": "OutOfMemoryError"},
            {"variant": "subpixel", "images_per_second": 25000.0}, {"variant": "s2d-ends", "images_per_second": 21000.0}]
    results.write_text(json.dumps({"runs": runs}))
    assert fastest_variant(results) == "subpixel"
    results.write_text(json.dumps({"runs": runs[1:2]}))
    with pytest.raises(SystemExit, match="train_speed_cuda.json holds no finished setting"):
        fastest_variant(results)


def test_results_are_saved_where_git_is_missing(tmp_path, monkeypatch):
    """A bare device machine may have no git: the benchmark's results must still be written."""
    import json

    from benchmarks.common import save

    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    saved = json.loads(save("train_speed_cuda", {"runs": []}, tmp_path).read_text())
    assert saved["runs"] == [] and saved["machine"]["commit"] is None
