"""IBA and InputIBA: statistics, the bottleneck's closed forms, the GAN stage, batching and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lit_xai.algorithms.input_iba import (
    IBA,
    BatchedCritic,
    GANConfig,
    GenerativePrior,
    InputIBA,
    LayerStatistics,
    PerImageBottleneck,
    WelfordEstimator,
    bottleneck_kl,
    estimate_layer_statistics,
)
from lit_xai.algorithms.input_iba.bottleneck import image_generators, per_image_normal, smoothing_radius
from lit_xai.masking import gaussian_blur
from lit_xai.models import SmallCNN

ROOT = Path(__file__).resolve().parents[1]

TINY_GAN = {"epochs": 2, "samples_per_epoch": 16, "batch_size": 8, "critic_iter": 2, "critic_channels": 4}


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(3, 3, channels=(4, 6, 8)).eval()


def batches(n: int = 4, size: int = 32, seed: int = 0, side: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(size, 3, side, side, generator=gen) for _ in range(n)]


class RegionModel(nn.Module):
    """``features`` is the identity; the class-0 logit is the mean of the features in the top-left 3x3 region."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.features(x)[:, :, :3, :3].mean((1, 2, 3))
        return torch.stack([s, -s], dim=1)


# ------------------------------------------------------------------------------------------- statistics
def test_welford_equals_torch_mean_std_over_uneven_batches():
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(103, 4, 5, generator=gen) * 3 + 1
    est = WelfordEstimator()
    for chunk in data.split([1, 7, 50, 45]):
        est.update(chunk)
    assert est.count == 103
    torch.testing.assert_close(est.mean(), data.double().mean(0))
    torch.testing.assert_close(est.std(), data.double().std(0))


def test_layer_statistics_match_torch_over_the_layer_outputs():
    model = tiny_cnn()
    data = batches()
    stats = estimate_layer_statistics(model, "features", data, num_samples=100, min_samples=50)
    with torch.no_grad():
        feats = torch.cat([model.features(model.stem(x)) for x in data])[:100]
    assert stats.num_samples == 100 and stats.nonnegative  # post-ReLU
    torch.testing.assert_close(stats.mean, feats.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.std, feats.std(0), atol=1e-5, rtol=1e-4)
    pixels = torch.cat(data)[:100].transpose(0, 1).flatten(1)
    torch.testing.assert_close(stats.input_mean, pixels.mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.input_std, pixels.std(1), atol=1e-5, rtol=1e-5)
    restored = LayerStatistics.from_dict(stats.to_dict())
    torch.testing.assert_close(restored.std, stats.std)


def test_statistics_of_a_vit_block_and_iba_map_on_patches():
    from lit_xai.models import build_model

    torch.manual_seed(0)
    vit = build_model(
        "vit_tiny_patch16_224", 3, img_size=8, patch_size=2, in_chans=3, embed_dim=16, depth=2, num_heads=2
    ).eval()
    iba = IBA(vit, "blocks.0", batch_size=2, steps=2, copies=2)
    stats = iba.estimate(batches(2, 16), min_samples=20)
    assert stats.mean.shape == (17, 16)  # class token + 4x4 patches
    maps = iba.attribute(torch.rand(2, 3, 8, 8), target=1)
    assert maps.shape == (2, 8, 8) and bool((maps >= 0).all())


# ------------------------------------------------------------------------------------------- bottleneck
def test_lambda_one_passes_the_input_through_unchanged():
    r = torch.randn(2, 3, 4, 4)
    for sigma, atol in ((0.0, 1e-30), (1.0, 1e-6)):  # the smoothed lambda is 1 up to float round-off
        bn = PerImageBottleneck(
            r.shape, torch.zeros(3, 4, 4), torch.ones(3, 4, 4), init_alpha=100.0, sigma=sigma
        )
        z, _ = bn(r, torch.randn(2, 5, 3, 4, 4))
        assert z.shape == (10, 3, 4, 4)
        torch.testing.assert_close(
            z.view(2, 5, 3, 4, 4), r.unsqueeze(1).expand(2, 5, 3, 4, 4), rtol=0, atol=atol
        )


def test_kl_matches_the_closed_form_of_two_gaussians():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(1000, generator=gen, dtype=torch.float64) * 2
    lam = torch.rand(1000, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    m = torch.rand(1000, generator=gen, dtype=torch.float64)
    N = torch.distributions.Normal
    kl_div = torch.distributions.kl_divergence
    # IBA: P(Z|R) = N(lam r, 1 - lam) against the noise N(0, 1).
    expected = kl_div(N(lam * r, 1 - lam), N(torch.zeros_like(r), torch.ones_like(r)))
    torch.testing.assert_close(bottleneck_kl(r, lam, 1 - lam), expected)
    # InputIBA: against the prior gated by m, N(m lam r, 1 - m lam).
    expected = kl_div(N(lam * r, 1 - lam), N(m * lam * r, 1 - m * lam))
    torch.testing.assert_close(bottleneck_kl(r, lam, 1 - lam, m), expected)
    # lambda -> 1 (alpha = 30: 1 - lambda is 0 in float32): the cost of a point mass, log(1 / (1 - lambda))
    # + r^2 / 2 - 1/2 = alpha + r^2 / 2 - 1/2 nats, stays exact because 1 - lambda comes from sigmoid(-alpha).
    alpha, r32 = torch.tensor(30.0), r.float()
    near_one = bottleneck_kl(r32, torch.sigmoid(alpha), torch.sigmoid(-alpha))
    torch.testing.assert_close(near_one, 30 + r32**2 / 2 - 0.5)
    # A prior that keeps everything (m = 1) makes any information free.
    assert bottleneck_kl(r, lam, 1 - lam, torch.ones_like(r)).abs().max() < 1e-12


def test_smoothing_is_normalised_so_one_minus_lambda_is_exact():
    a = torch.rand(2, 3, 5, 5)
    radius = smoothing_radius(1.0)
    torch.testing.assert_close(gaussian_blur(1 - a, 1.0, radius), 1 - gaussian_blur(a, 1.0, radius))
    torch.testing.assert_close(gaussian_blur(torch.ones(1, 1, 3, 3), 1.0, radius), torch.ones(1, 1, 3, 3))
    # The bottleneck's (lambda, 1 - lambda) pair sums to one after smoothing, however large alpha gets.
    bottleneck = PerImageBottleneck((2, 3, 5, 5), torch.zeros(3, 1, 1), torch.ones(3, 1, 1), sigma=1.0)
    with torch.no_grad():
        bottleneck.alpha.copy_(torch.randn(2, 3, 5, 5) * 4)
    lam, one_minus = bottleneck.lambdas()
    torch.testing.assert_close(lam + one_minus, torch.ones_like(lam))


def _region_setup():
    model = RegionModel().eval()
    stats = estimate_layer_statistics(model, "features", [torch.randn(256, 1, 8, 8)], min_samples=50)
    x = torch.full((2, 1, 8, 8), 2.0)  # the same value everywhere: only the model decides where it matters
    return model, stats, x


def test_beta_zero_favours_the_region_the_model_uses():
    model, stats, x = _region_setup()
    iba = IBA(model, "features", stats, beta=0.0, sigma=0.0, steps=10)
    bottleneck, features, _ = iba.fit(x, torch.zeros(2, dtype=torch.long), range(2))
    bits = iba.feature_map(bottleneck, features)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[:3, :3] = True
    assert bits[:, region].min() > 1.5 * bits[:, ~region].max()
    # Outside the region nothing changes the loss, so alpha keeps its initial value.
    torch.testing.assert_close(bottleneck.alpha.detach()[:, 0][:, ~region], torch.full((2, 55), 5.0))


def test_input_bottleneck_with_beta_zero_keeps_the_used_pixels():
    model, stats, x = _region_setup()
    explainer = InputIBA(model, "features", stats, input={"beta": 0.0, "sigma": 0.0, "steps": 10})
    lam = explainer.fit_input(x, torch.zeros(2, dtype=torch.long), torch.full_like(x, 0.5), range(2))
    assert lam[:, 0, :3, :3].min() > 0.999 and torch.allclose(
        lam[:, 0, 3:, 3:], torch.sigmoid(torch.tensor(5.0))
    )
    # With an information cost, unused pixels are squeezed out while the used ones stay.
    explainer.input_config.beta = 0.1
    lam = explainer.fit_input(x, torch.zeros(2, dtype=torch.long), torch.full_like(x, 0.5), range(2))
    assert lam[:, 0, :3, :3].min() > 0.8 and lam[:, 0, 3:, 3:].max() < 0.05


# ------------------------------------------------------------------------------------------- the GAN stage
def _prior_module(config: GANConfig, n_images: int = 2):
    model = tiny_cnn().requires_grad_(False)
    iba = IBA(model, "features", steps=3, copies=2)
    iba.estimate(batches(), min_samples=50)
    x = batches(1, n_images, seed=5)[0]
    target = torch.arange(n_images) % 3
    with torch.enable_grad():
        bottleneck, features, _ = iba.fit(x, target, range(n_images))
    stats = iba.statistics
    module = GenerativePrior(
        model, iba.module, x, features, bottleneck, torch.full((n_images, 8, 8), 0.5), stats.input_mean,
        stats.input_std, image_generators(0, range(n_images), 1, x.device), config,
    )  # fmt: skip
    return module


def _fit(module: GenerativePrior) -> None:
    module.fit()


def test_critic_learns_to_separate_and_generator_steps_close_the_gap():
    cfg = GANConfig(epochs=6, samples_per_epoch=32, batch_size=16, critic_iter=10**6, critic_lr=1e-3,
                    weight_clip=0.05, critic_channels=8)  # fmt: skip
    module = _prior_module(cfg)
    mask_before = module.generator.mask_logit.detach().clone()
    _fit(module)  # critic_iter is huge: only the first step of each epoch moves the generator
    w = torch.tensor([h["wasserstein"] for h in module.history])
    # The critic's Wasserstein estimate E D(real) - E D(fake) grows from ~0 as it learns (critic loss falls).
    assert w[-4:].mean() > 0 and w[-4:].mean() > w[:2].mean()
    assert not torch.equal(mask_before, module.generator.mask_logit.detach())
    # With the critic fixed, generator steps lower the generator loss -E D(fake).
    gaussian = per_image_normal(module.generators, (16, 3, 8, 8), "cpu")
    opt = torch.optim.RMSprop(module.generator.parameters(), lr=0.05)
    module.critic.requires_grad_(False)
    losses = []
    for _ in range(5):
        loss = -module.critic(module.sample_fake(gaussian)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_generator_mask_stays_in_unit_interval_and_critics_are_independent():
    module = _prior_module(GANConfig(**{**TINY_GAN, "mask_lr": 50.0}))
    _fit(module)
    prior = module.prior()
    assert prior.shape == (2, 3, 8, 8) and bool(((prior >= 0) & (prior <= 1)).all())
    assert all(h["critic_loss"] == h["critic_loss"] for h in module.history)  # no NaN
    # Critic i only looks at image i: changing image 1's features leaves critic 0's scores alone.
    critic = BatchedCritic(2, 4, (8, 8), hidden=3)
    feats = torch.randn(2, 5, 4, 8, 8)
    other = feats.clone()
    other[1] += 1
    torch.testing.assert_close(critic(feats)[0], critic(other)[0])
    assert not torch.allclose(critic(feats)[1], critic(other)[1])


def test_gradient_penalty_variant_runs():
    module = _prior_module(GANConfig(**{**TINY_GAN, "weight_clip": 0.0, "gradient_penalty": 10.0}))
    _fit(module)
    assert len(module.history) == 4 and all(math.isfinite(h["critic_loss"]) for h in module.history)


# ------------------------------------------------------------------------------------------- batching
def test_batched_and_one_at_a_time_give_the_same_maps():
    model = tiny_cnn()
    x, target = batches(1, 3, seed=9)[0], torch.tensor([0, 1, 2])
    kwargs = {"feature": {"steps": 3, "copies": 2}, "gan": TINY_GAN, "input": {"steps": 4, "copies": 2}}
    batched = InputIBA(model, "features", batch_size=3, **kwargs)
    stats = batched.estimate(batches(), min_samples=50)
    single = InputIBA(model, "features", stats, batch_size=1, **kwargs)
    out_b, out_s = batched.explain(x, target), single.explain(x, target)
    for key in ("feature", "prior", "input"):
        torch.testing.assert_close(out_b[key], out_s[key], atol=1e-4, rtol=1e-3)
    iba_b = IBA(model, "features", stats, batch_size=3).attribute(x, target)
    iba_s = IBA(model, "features", stats, batch_size=1).attribute(x, target)
    torch.testing.assert_close(iba_b, iba_s, atol=1e-6, rtol=1e-4)
    assert out_b["input"].shape == (3, 8, 8) and not torch.equal(out_b["input"][0], out_b["input"][1])


def test_model_state_is_left_as_it_was():
    model = tiny_cnn().train()
    stats = estimate_layer_statistics(model.eval(), "features", batches(), min_samples=50)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    InputIBA(model, "features", stats, feature={"steps": 1}, gan=TINY_GAN, input={"steps": 1}).attribute(
        batches(1, 2)[0], 0
    )
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_save_and_load_round_trip(tmp_path):
    model = tiny_cnn()
    iba = IBA(model, "features", beta=3.0)
    iba.estimate(batches(), min_samples=50)
    iba.save(tmp_path / "iba.pt")
    loaded = IBA(model, "features").load(tmp_path / "iba.pt")
    assert loaded.config.beta == 3.0
    torch.testing.assert_close(loaded.statistics.mean, iba.statistics.mean)


class FlakyRegionModel(RegionModel):
    """Runs out of memory once, in the first optimisation step (as when another job briefly holds the GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:  # call 1 reads the clean features, call 2 is the first step's fast path
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_out_of_memory_is_raised_and_does_not_switch_to_the_copying_path_for_good():
    _, stats, x = _region_setup()
    iba = IBA(FlakyRegionModel().eval(), "features", stats, steps=2, copies=2)
    target = torch.zeros(2, dtype=torch.long)
    with pytest.raises(torch.OutOfMemoryError):
        iba.fit(x, target, range(2))
    assert iba._expand_at_layer, (
        "one OOM made the explainer copy inputs (10x memory) for the rest of its life"
    )
    iba.fit(x, target, range(2))  # the next call, with memory free again, takes the fast path
    assert iba._expand_at_layer


# ------------------------------------------------------------------------------------------- bad input
def test_unknown_layer_lists_the_layer_names():
    with pytest.raises(ValueError, match=r"no layer named 'conv9'.*stem\.0.*features"):
        IBA(tiny_cnn(), "conv9")


def test_too_few_samples_for_the_statistics():
    with pytest.raises(ValueError, match="only 64 samples.*min_samples=1000"):
        estimate_layer_statistics(tiny_cnn(), "features", batches(2))


def test_wrong_image_size_and_missing_statistics():
    model = tiny_cnn()
    iba = IBA(model, "features")
    with pytest.raises(ValueError, match="estimate"):
        iba.attribute(torch.rand(1, 3, 8, 8))
    iba.estimate(batches(), min_samples=50)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(B, 3, 8, 8\).*got \(1, 3, 16, 16\)"):
        iba.attribute(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        iba.attribute(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="weight_clip > 0 or gradient_penalty > 0"):
        GANConfig(weight_clip=0.0)


@pytest.mark.slow
def test_config_runner_writes_maps(tmp_path):
    import yaml

    from lit_xai.algorithms.input_iba.__main__ import main

    config = {
        "model": {"timm": "cnn", "num_classes": 4, "kwargs": {"in_chans": 3, "channels": [4, 4, 8]}},
        "data": {
            "class_path": "lit_xai.data.ShapesDataModule",
            "init_args": {"num_train": 120, "num_val": 4, "num_test": 4, "batch_size": 60},
        },
        "statistics": {"num_samples": 120, "min_samples": 100},
        "explainer": {
            "layer": "features",
            "batch_size": 2,
            "feature": {"steps": 1},
            "gan": TINY_GAN,
            "input": {"steps": 1},
        },
        "iba": {"steps": 1},
        "num_images": 2,
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    maps = main(["--config", str(path)])
    assert set(maps) == {"InputIBA", "prior", "feature IBA", "IBA"} and maps["InputIBA"].shape == (2, 32, 32)
    saved = torch.load(tmp_path / "out" / "maps.pt", weights_only=True)
    assert saved["annotation"].shape == (2, 32, 32) and (tmp_path / "out" / "maps.png").is_file()


@pytest.mark.parametrize("config", ["shapes/input_iba.yaml", "image_folder/input_iba.yaml"])
def test_the_configs_parse_and_a_misspelled_key_is_an_error(config, capsys):
    """The InputIBA command is on jsonargparse: the shipped configs parse, flags override them, --print_config
    shows the result, and a key that means nothing is refused instead of ignored."""
    from jsonargparse import ArgumentError

    from lit_xai.algorithms.input_iba.__main__ import build_parser

    parser = build_parser()
    path = str(ROOT / "configs" / config)
    cfg = parser.parse_args(["--config", path, "--explainer.gan.epochs", "3"])
    assert cfg.explainer.gan.epochs == 3 and cfg.explainer.layer in ("features", "layer2")
    assert cfg.explainer.feature.beta == 20.0  # InputIBA's default where the config is silent or the paper's
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", path, "--print_config"])
    assert "critic_lr" in capsys.readouterr().out
    parser.exit_on_error = False
    with pytest.raises(ArgumentError, match="btea"):
        parser.parse_args(["--config", path, "--explainer.feature", "{btea: 3}"])


# ------------------------------------------------------------------------------------------- resuming
class Crash(Exception):
    """Stands for a kill at a GAN step (tests/test_reliability_resume.py kills a real run with SIGKILL)."""


def _crash_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th GAN step of the process raise (steps of every chunk counted together)."""
    step, calls = GenerativePrior.train_step, [0]

    def crashing(self):
        calls[0] += 1
        if calls[0] == call:
            raise Crash
        return step(self)

    monkeypatch.setattr(GenerativePrior, "train_step", crashing)


def test_a_stopped_explain_resumes_to_the_same_weights_and_maps(tmp_path, monkeypatch):
    model = tiny_cnn()
    x, target = batches(1, 4, seed=9)[0], torch.tensor([0, 1, 2, 0])
    gan = {**TINY_GAN, "epochs": 3}  # 6 steps per chunk; a generator step at every even step
    explainer = InputIBA(model, "features", batch_size=2, feature={"steps": 2, "copies": 2}, gan=gan,
                         input={"steps": 2, "copies": 2})  # fmt: skip
    explainer.estimate(batches(), min_samples=50)
    straight = explainer.explain(x, target)
    state = tmp_path / "state"
    _crash_at(monkeypatch, 6 + 6)  # the last GAN step of the second chunk
    with pytest.raises(Crash):
        explainer.explain(x, target, state_dir=state, save_every=3)
    # The first chunk is done; the second chunk's GAN state is from step 3: steps 3-4 (a generator step) are lost.
    assert sorted(p.name for p in state.iterdir()) == ["chunk_000000.pt", "prior_000002.pt"]
    assert torch.load(state / "prior_000002.pt", weights_only=True)["gan"]["step"] == 3
    monkeypatch.undo()
    with pytest.raises(ValueError, match="another InputIBA run"):  # other targets: not this run's progress
        explainer.explain(x, torch.tensor([1, 1, 1, 1]), state_dir=state)
    resumed = explainer.explain(x, target, state_dir=state, save_every=3)
    for key in ("feature", "prior", "input"):
        assert torch.equal(straight[key], resumed[key]), key
    for key, value in straight["generator"].items():
        assert torch.equal(value, resumed["generator"][key]), key
    assert straight["history"] == resumed["history"]
    assert not state.exists()  # nothing left behind
