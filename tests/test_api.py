"""The notebook API (issue 14, item 4): ``lit_xai.explain`` and ``lit_xai.score`` give the numbers the registries
give, for plain networks, declared modules and functions of one's own, and ``import lit_xai`` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import lit_xai
from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.attribution import build_attribution
from lit_xai.masking import BaselineFill, TokenDrop
from lit_xai.metrics.registry import build_metric
from lit_xai.players import PatchGrid


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()


def test_import_is_light_and_the_version_comes_from_the_package_metadata():
    code = "import sys, lit_xai; print('torch' in sys.modules, lit_xai.__version__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "False"
    assert out[1] == __import__("importlib.metadata").metadata.version("lit_xai")
    assert {"explain", "score", "Explanation", "__version__"} <= set(dir(lit_xai))


def test_explain_gives_the_registry_method_on_the_default_players_and_the_predicted_class():
    model, x = linear_model(), torch.randn(5, 1, 8, 8)
    e = lit_xai.explain(model, x, method="integrated_gradients", steps=8)
    players = PatchGrid(8, 1)  # an 8 x 8 grid of 1-pixel patches
    expected = build_attribution("integrated_gradients", model, players, steps=8).attribute(
        x, model(x).argmax(-1)
    )
    assert e.players.num_players == 64 and isinstance(e.masker, BaselineFill)
    torch.testing.assert_close(e.target, model(x).argmax(-1))
    torch.testing.assert_close(e.values, expected)
    pooled = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()  # any image size
    assert (
        lit_xai.explain(pooled, torch.randn(2, 1, 12, 12), "gradient").players.num_players == 16
    )  # 4 x 4 grid
    with pytest.raises(ValueError, match="give patch_size"):
        lit_xai.explain(pooled, torch.randn(2, 1, 9, 9), "gradient")


def test_a_target_for_all_and_a_function_of_ones_own_pooled_onto_the_players():
    model, x = linear_model(), torch.randn(3, 1, 8, 8)

    def pixel_gradient_x_input(network, inputs, target):  # returns a pixel map, as other libraries do
        inputs = inputs.clone().requires_grad_(True)
        network(inputs).gather(1, target[:, None]).sum().backward()
        return inputs.grad * inputs

    own = lit_xai.explain(model, x, method=pixel_gradient_x_input, target=1, patch_size=2)
    builtin = lit_xai.explain(model, x, method="gradient_x_input", target=1, patch_size=2)
    assert own.method == "pixel_gradient_x_input" and own.target.tolist() == [1, 1, 1]
    torch.testing.assert_close(own.values, builtin.values)
    with pytest.raises(ValueError, match=r"returned shape \(3, 5\)"):
        lit_xai.explain(model, x, method=lambda m, inputs, t: torch.zeros(3, 5))


def test_a_declared_module_is_explained_with_its_own_network_players_and_masker():
    classifier = ClassifierModule("cnn", 3, {"in_chans": 1}).eval()
    x = torch.randn(2, 1, 8, 8)
    e = lit_xai.explain(classifier, x, method="gradient", patch_size=4)
    expected = build_attribution("gradient", classifier.model, PatchGrid(8, 4)).attribute(x, e.target)
    torch.testing.assert_close(e.values, expected)

    class Module(nn.Module):  # declares players and a masker filling 0.5, and explains itself
        def __init__(self):
            super().__init__()
            self.net, self.players = linear_model(), PatchGrid(8, 4)
            self.masker = BaselineFill(self.players, fill=0.5)
            self.explained_network = self.net

        def attribute(self, inputs, target=None):
            return torch.arange(4.0).expand(inputs.shape[0], 4)

    module = Module()
    own = lit_xai.explain(module, x, method=None)
    assert own.masker is module.masker and own.values[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert lit_xai.explain(module, x, "leave_one_out").masker is module.masker
    with pytest.raises(ValueError, match="has none"):
        lit_xai.explain(linear_model(), x, method=None)


def test_a_vit_is_explained_on_its_own_patches_with_tokens_dropped():
    vit = ClassifierModule(
        "vit_tiny_patch16_224",
        3,
        dict(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2),
    ).eval()
    e = lit_xai.explain(vit, torch.randn(2, 1, 8, 8), method="leave_one_out")
    assert e.players.num_players == 4 and isinstance(e.masker, TokenDrop)


def test_score_equals_the_registry_metric_and_checks_its_arguments():
    model, x = linear_model(), torch.randn(4, 1, 8, 8)
    e = lit_xai.explain(model, x, method="gradient_x_input", patch_size=2)
    scores = lit_xai.score(model, x, e, metric=["insertion_deletion", "sensitivity_n"], num_steps=4)
    metric = build_metric("insertion_deletion", masker=e.masker, options={"num_steps": 4})
    metric.update(model, x, e.values, e.target)
    assert scores["insertion_auc"] == metric.summary()["insertion_auc"]
    assert "sensitivity_n" in scores  # num_steps went to insertion/deletion only

    plain = lit_xai.score(model, x, e.values, target=e.target, players=e.players, num_steps=4)
    assert plain["deletion_auc"] == scores["deletion_auc"]
    with pytest.raises(ValueError, match="unknown metric 'insertion'"):
        lit_xai.score(model, x, e, metric="insertion")
    with pytest.raises(ValueError, match="'num_step' is not an option"):
        lit_xai.score(model, x, e, num_step=4)
    with pytest.raises(ValueError, match="give annotation="):
        lit_xai.score(model, x, e, metric="localization")
    annotation = torch.zeros(4, 8, 8)
    annotation[:, :2, :2] = 1
    assert (
        lit_xai.score(model, x, e, metric="localization", annotation=annotation)["pointing_game"]["count"]
        == 4
    )


def test_score_against_ground_truth_is_perfect_for_the_exact_values():
    model, x = linear_model(), torch.randn(2, 1, 8, 8)
    e = lit_xai.explain(model, x, method="kernel_shap", patch_size=4, max_evaluations=2048)
    truth = lit_xai.score(model, x, e, metric="shapley_error")
    assert truth["pearson"]["mean"] > 0.99


def test_the_readme_notebook_section_runs_as_written(tmp_path, monkeypatch):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## In a notebook\n", 1)[1].split("\n## ", 1)[0]
    (code,) = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "explanations.png").stat().st_size > 0
