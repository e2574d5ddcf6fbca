"""VisFIS and RRR: each loss term is zero where it should be, trains the model, ignores batch order; short fits."""

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from lit_xai.algorithms.visfis import (
    VisFISModule,
    attribution_invariance_loss,
    human_importance,
    invariance_keep,
    model_importance,
    output_invariance_loss,
    plausibility_loss,
    rrr_loss,
    sufficiency_loss,
    uncertainty_loss,
)
from lit_xai.algorithms.visfis.torch_model import check_annotation
from lit_xai.attribution.gradients import input_gradient, output_gradient
from lit_xai.cli import main as cli_main
from lit_xai.data import DecoyDigitsDataModule, DigitsDataModule
from lit_xai.masking import BaselineFill
from lit_xai.models import MLP
from lit_xai.players import FeatureGroups, PatchGrid, players_for

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
F_IN, K = 6, 3
IMPORTANT = torch.tensor([True, True, True, False, False, False])  # columns 0-2 matter to the "human"


def blind_linear(weight_scale: float = 1.0) -> nn.Linear:
    """A linear model that only looks at the important columns and has no bias."""
    torch.manual_seed(0)
    model = nn.Linear(F_IN, K, bias=False)
    with torch.no_grad():
        model.weight.mul_(weight_scale)
        model.weight[:, ~IMPORTANT] = 0.0
    return model


def tabular_batch(n: int = 8):
    torch.manual_seed(1)
    x = torch.randn(n, F_IN)
    y = torch.randint(0, K, (n,))
    important = IMPORTANT.expand(n, F_IN).clone()
    important[-1] = False  # an unannotated row: every term must skip it
    return x, y, important


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP(F_IN, K, hidden=(8,))


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    return L.Trainer(accelerator="cpu", **{**defaults, **kwargs})


# ------------------------------------------------------------------------------------------------ zero where zero


def test_sufficiency_is_the_cross_entropy_on_the_important_players_alone():
    x, y, important = tabular_batch()
    model, masker = tiny_mlp(), BaselineFill(FeatureGroups(F_IN), fill=0.0)
    rows = important.any(1)
    expected = nn.functional.cross_entropy(model(x[rows] * IMPORTANT.float()), y[rows])
    torch.testing.assert_close(sufficiency_loss(model, masker, x, y, important), expected)
    # A model that only reads important columns and is confident and right has (almost) no sufficiency loss.
    model = blind_linear()
    with torch.no_grad():
        y_hat = model(x).argmax(-1)
        model.weight.mul_(1e3)
    assert sufficiency_loss(model, masker, x, y_hat, important) < 1e-6


def test_uncertainty_is_zero_for_a_model_blind_to_the_unimportant_players():
    x, _, important = tabular_batch()
    masker = BaselineFill(FeatureGroups(F_IN), fill=0.0)
    assert uncertainty_loss(blind_linear(), masker, x, important).abs() < 1e-6
    value = uncertainty_loss(tiny_mlp(), masker, x, important)
    assert value > 0
    # The closed form KL(uniform || p) = -log K - mean_k log p_k on the unimportant columns alone.
    rows = important.any(1)
    log_p = tiny_mlp()(x[rows] * (~IMPORTANT).float()).log_softmax(-1)
    torch.testing.assert_close(value, (-math.log(K) - log_p.mean(1)).mean())


def test_output_invariance_is_zero_when_the_unimportant_players_are_ignored():
    x, _, important = tabular_batch()
    masker = BaselineFill(FeatureGroups(F_IN), fill=0.0)
    keep = invariance_keep(important, generator=torch.Generator().manual_seed(0))
    assert (keep | ~important).all() and (keep[important]).all()
    model = blind_linear()
    assert output_invariance_loss(model, masker, x, model(x), important, keep).abs() < 1e-6
    keep_none = important.clone()  # remove every unimportant player
    mlp = tiny_mlp()
    assert output_invariance_loss(mlp, masker, x, mlp(x), important, keep_none) > 0
    with pytest.raises(ValueError, match="every important player"):
        output_invariance_loss(mlp, masker, x, mlp(x), important, ~important)


def test_attribution_invariance_is_the_share_outside_the_important_players():
    _, _, important = tabular_batch()
    inside_only = torch.rand(8, F_IN) * important
    assert attribution_invariance_loss(inside_only, important) == 0
    uniform = torch.ones(8, F_IN)
    torch.testing.assert_close(attribution_invariance_loss(uniform, important), torch.tensor(0.5))


def test_plausibility_is_zero_for_aligned_importance_and_one_for_orthogonal():
    human = torch.rand(5, 10)
    assert plausibility_loss(3.0 * human, human).abs() < 1e-6
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(plausibility_loss(a.flip(1), a), torch.tensor(1.0))
    # Rows without human importance are skipped.
    human[0] = 0
    torch.manual_seed(0)
    model_values = torch.rand(5, 10)
    torch.testing.assert_close(
        plausibility_loss(model_values, human), plausibility_loss(model_values[1:], human[1:])
    )


def log_prob_sum_gradient(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """RRR's input gradient ``d/dx sum_k log p_k``, as VisFISModule takes it."""
    x = x.detach().requires_grad_(True)
    return output_gradient(model(x).log_softmax(-1), x, create_graph=create_graph)


def test_rrr_matches_the_linear_closed_form_and_vanishes_for_a_blind_model():
    x, _, important = tabular_batch()
    annotation = important.float()
    # For logits W x: d/dx sum_k log p_k = sum_k W_k - K * sum_j p_j W_j.
    torch.manual_seed(0)
    linear = nn.Linear(F_IN, K)
    grad = log_prob_sum_gradient(linear, x)
    p = linear(x).softmax(-1)
    expected = linear.weight.sum(0) - K * p @ linear.weight
    torch.testing.assert_close(grad, expected)
    rows = annotation.sum(1) > 0
    manual = ((1 - annotation[rows]) * expected[rows]).square().sum(1).mean()
    torch.testing.assert_close(rrr_loss(grad, annotation), manual)
    assert rrr_loss(log_prob_sum_gradient(blind_linear(), x), annotation) == 0


# ------------------------------------------------------------------------------------- gradients and batch order


def all_terms(model: nn.Module, x, y, important, keep) -> dict[str, torch.Tensor]:
    masker = BaselineFill(FeatureGroups(F_IN), fill=0.0)
    players = masker.players
    logits = model(x)
    importance = model_importance(input_gradient(model, x, y, create_graph=True), players)
    human = important.float()
    return {
        "sufficiency": sufficiency_loss(model, masker, x, y, important),
        "uncertainty": uncertainty_loss(model, masker, x, important),
        "output_invariance": output_invariance_loss(model, masker, x, logits, important, keep),
        "attribution_invariance": attribution_invariance_loss(importance, important),
        "plausibility": plausibility_loss(importance, human),
        "rrr": rrr_loss(log_prob_sum_gradient(model, x, create_graph=True), human),
    }


def test_every_term_reaches_the_parameters_and_ignores_batch_order():
    x, y, important = tabular_batch()
    keep = invariance_keep(important, generator=torch.Generator().manual_seed(0))
    model = tiny_mlp()
    terms = all_terms(model, x, y, important, keep)
    for name, value in terms.items():
        model.zero_grad()
        value.backward(retain_graph=True)  # plausibility and attribution invariance share a graph
        # Every term reaches the weights (biases only move ReLU kinks, which gradient terms cannot see).
        for layer in (model.net[1], model.net[-1]):
            assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, name
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    shuffled = all_terms(model, x[perm], y[perm], important[perm], keep[perm])
    for name in terms:
        torch.testing.assert_close(shuffled[name], terms[name], msg=name)


def test_human_importance_is_the_annotated_fraction_per_player():
    annotation = torch.zeros(1, 4, 4)
    annotation[0, :2, :1] = 1.0  # half of the top-left 2x2 patch
    annotation[0, 2:, 2:] = 1.0  # all of the bottom-right patch
    fraction = human_importance(annotation, PatchGrid(4, 2))
    torch.testing.assert_close(fraction, torch.tensor([[0.5, 0.0, 0.0, 1.0]]))


# ---------------------------------------------------------------------------------------------- bad input, fits


def test_bad_annotations_are_rejected_with_the_fix():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="needs human importance"):
        check_annotation(x, None)
    with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
        check_annotation(x, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_annotation(x, torch.full((2, 8, 8), 2.0))
    with pytest.raises(ValueError, match=">= 0"):
        VisFISModule("mlp", 10, {"in_features": 64}, plausibility_weight=-1.0)


def test_missing_annotation_fails_before_training():
    module = VisFISModule("mlp", 10, {"in_features": 64})
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(ValueError, match="no 'annotation'"):
        quiet_trainer(max_epochs=1, limit_train_batches=2).fit(module, DigitsDataModule(batch_size=32))
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


class WrongAnnotation(DecoyDigitsDataModule):
    """Decoy digits whose annotation lost its last row and column (as if not resized with the image)."""

    def build_datasets(self):
        datasets = super().build_datasets()
        for dataset in datasets:
            dataset.annotations = dataset.annotations[:, :-1, :-1]
        return datasets


def test_annotation_shape_mismatch_fails_before_training():
    module = VisFISModule("mlp", 10, {"in_features": 256})
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(ValueError, match="without the channel axis"):
        quiet_trainer(max_epochs=1, limit_train_batches=2).fit(module, WrongAnnotation(batch_size=32))
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_no_annotation_needed_when_every_term_is_off():
    weights = dict.fromkeys(
        ("sufficiency_weight", "uncertainty_weight", "output_invariance_weight", "plausibility_weight"), 0.0
    )
    module = VisFISModule("mlp", 10, {"in_features": 64}, **weights)
    quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1).fit(
        module, DigitsDataModule(batch_size=32)
    )


def test_patch_players_and_all_terms_on_a_cnn():
    L.seed_everything(0)
    module = VisFISModule(
        "cnn", 10, {"in_chans": 1, "channels": (4, 8)}, patch_size=4, attribution_invariance_weight=1.0,
        rrr_weight=1.0,
    )  # fmt: skip
    assert players_for(torch.zeros(1, 1, 16, 16), patch_size=4).num_players == 16
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, DecoyDigitsDataModule(batch_size=16))
    for name in (
        "sufficiency",
        "uncertainty",
        "output_invariance",
        "attribution_invariance",
        "plausibility",
        "rrr",
    ):
        assert torch.isfinite(trainer.callback_metrics[f"train/{name}"]), name


@pytest.mark.parametrize("config", ["baseline", "rrr", "visfis", "clean"])
def test_config_fits(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs write to ./outputs: keep the repository clean
    cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "decoy_digits" / f"{config}.yaml"),
            "--trainer.fast_dev_run=2",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.batch_size=8",
        ]
    )
